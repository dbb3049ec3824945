"""The PPO update: clipped surrogate + clipped value loss + entropy bonus, over minibatches and epochs.

The learner consumes a :class:`RolloutBatch` whose advantages and returns were
already computed (``curriculum_ppo.ppo.gae.compute_gae``) and owns the Adam
optimizer. It is deliberately free of environment logic.

Design points, and why:

* ``loss_mask`` -- the curriculum starts episodes by replaying part of the
  demonstration ("warm-up") and a recurrent policy gets a burn-in prefix. Those
  transitions were not chosen by the policy, so they must not be trained on;
  every loss term and statistic is a *masked mean* over valid samples only.
* Recurrent minibatches split over environments (columns) and keep whole time
  sequences, so the GRU is unrolled from the hidden state each environment had at
  rollout start, exactly as during the rollout.
* No host synchronization inside the minibatch loop: statistics are kept as
  device tensors and converted to Python floats once at the end. The only syncs
  are one small copy of ``loss_mask`` to the CPU at the start (to skip
  minibatches with no valid sample), if ``target_kl`` is set one per epoch, and
  for a recurrent policy one per minibatch (the GRU reads where episodes start).
* Mixed precision: the policy's conv trunk runs in bfloat16, GRU and heads in
  float32 (see ``policy.py``), on CUDA by default (``amp``) and on CPUs only when
  asked (``cpu_bf16``) and only where oneDNN has bfloat16 kernels (AMX or
  AVX-512-BF16; :func:`cpu_has_bf16`): elsewhere bfloat16 is emulated and slower.
  bfloat16 has float32's range, so no gradient scaler is needed.
* DistributedDataParallel: pass the wrapped policy. Training passes call the
  wrapper (``self.policy(..., sequence=True)``), so gradients are all-reduced;
  everything else goes through :func:`unwrap`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from curriculum_ppo.config_flags import knob
from curriculum_ppo.errors import UserError
from curriculum_ppo.ppo.policy import unwrap

if TYPE_CHECKING:
    from curriculum_ppo.imitation import DemoTargets

__all__ = ["PPOConfig", "PPOLearner", "RolloutBatch", "cpu_has_bf16", "rollout_obs_buffer", "trunk_dtype", "unwrap"]


@dataclass
class PPOConfig:
    """PPO hyper-parameters.

    The original atari-reset run used: lr 1e-4, Adam eps 1e-6, 4 epochs with one
    full-batch minibatch each, clip 0.1, entropy 1e-4, gamma 0.999, lambda 0.95,
    128 steps x 16 envs per worker on 8 GPU workers (plus L2 1e-7), i.e. about a
    billion frames per game. Our defaults are the CleanRL Atari settings instead,
    because here the budget is a few CPU cores and ~10M frames: a larger step
    size, a larger entropy bonus (more exploration per sample) and gamma 0.99
    (shorter horizon, lower-variance returns) learn faster in that regime. They
    are all knobs; set them back for a faithful reproduction.

    ``gamma``/``gae_lambda`` live here so that one config describes a run; the
    learner itself does not use them (GAE is computed before ``update``).
    """

    lr: float = knob(2.5e-4, flag="--lr", help="Adam learning rate")
    adam_eps: float = 1e-5
    num_epochs: int = knob(4, flag="--epochs", help="PPO epochs per update")
    num_minibatches: int = knob(8, flag="--minibatches", help="minibatches per epoch")
    clip_coef: float = knob(0.1, flag="--clip", help="PPO clip range (policy and value)")
    clip_vloss: bool = True
    ent_coef: float = knob(0.001, flag="--ent-coef", help="entropy coefficient")
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    gamma: float = knob(0.99, flag="--gamma", help="discount")
    gae_lambda: float = knob(0.95, flag="--gae-lambda", help="GAE lambda")
    target_kl: float | None = None
    anneal_lr: bool = False  # honoured by the training loop through ``lr_scale``
    amp: bool = True  # bfloat16 trunk on CUDA; ignored on CPU
    cpu_bf16: bool = knob(False, flag="--cpu-bf16", runtime=True,
                          help="run the conv trunk in bfloat16 on CPUs with bfloat16 kernels (AMX or AVX-512-BF16); "
                               "other CPUs train in float32, with a warning")

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise UserError("--lr must be positive")
        if self.num_epochs <= 0 or self.num_minibatches <= 0:
            raise UserError("--epochs and --minibatches must be positive")


@dataclass
class RolloutBatch:
    """One rollout segment of T steps from B environments, time-major.

    ``episode_starts[t, b]`` is true when ``obs[t, b]`` begins a new episode
    (the GRU state is zeroed before it). ``initial_state`` is the GRU state of
    each environment before step 0 (None for feed-forward policies).
    ``loss_mask`` is 1.0 for transitions to train on, 0.0 otherwise.
    """

    obs: Tensor  # uint8 [T, B, C, H, W], any strides (rollout_obs_buffer's train fastest)
    actions: Tensor  # int64 [T, B]
    logprobs: Tensor  # [T, B] log pi_old(a|s)
    values: Tensor  # [T, B] V_old(s)
    advantages: Tensor  # [T, B]
    returns: Tensor  # [T, B] advantages + values
    episode_starts: Tensor  # bool/float [T, B]
    loss_mask: Tensor  # float [T, B]
    initial_state: Tensor | None = None  # [B, hidden]

    @property
    def num_steps(self) -> int:
        return self.actions.shape[0]

    @property
    def num_envs(self) -> int:
        return self.actions.shape[1]

    def to(self, device: torch.device | str) -> RolloutBatch:
        """Copy to ``device`` (non-blocking where possible); float fields become float32."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                moved[f.name] = None
            elif f.name == "obs":
                moved[f.name] = value.to(device, non_blocking=True)
            elif f.name == "actions":
                moved[f.name] = value.to(device, torch.long, non_blocking=True)
            else:
                moved[f.name] = value.to(device, torch.float32, non_blocking=True)
        return RolloutBatch(**moved)

    def validate(self) -> None:
        T, B = self.actions.shape
        if self.obs.dtype != torch.uint8 or self.obs.shape[:2] != (T, B):
            raise ValueError(f"obs must be uint8 [T={T}, B={B}, C, H, W], got {self.obs.dtype} {tuple(self.obs.shape)}")
        for name in ("logprobs", "values", "advantages", "returns", "episode_starts", "loss_mask"):
            if getattr(self, name).shape != (T, B):
                raise ValueError(f"{name} must have shape [{T}, {B}], got {tuple(getattr(self, name).shape)}")
        if self.initial_state is not None and self.initial_state.shape[0] != B:
            raise ValueError(f"initial_state must have {B} rows, got {tuple(self.initial_state.shape)}")


def rollout_obs_buffer(num_steps: int, num_envs: int, obs_shape: tuple[int, ...],
                       pin_memory: bool = False) -> Tensor:
    """A zeroed uint8 ``[T, B, *obs_shape]`` tensor for :attr:`RolloutBatch.obs`; images are stored channels-last.

    Why: the CNN runs in the channels-last (NHWC) layout (see ``policy.py``). With frames stored
    as ``[T, B, H, W, C]`` underneath, a minibatch gathered from the rollout already has that
    layout, and turning it into float is one contiguous pass; from the plain ``[T, B, C, H, W]``
    storage every minibatch of every epoch paid for a strided, layout-changing copy (14% of a CPU
    update of the Nature CNN, profiled). Shape and indexing are those of a plain tensor; only the
    strides differ. Other observation shapes are stored plainly.
    """
    image = len(obs_shape) == 3
    stored = (*obs_shape[1:], obs_shape[0]) if image else tuple(obs_shape)  # [C, H, W] kept as [H, W, C]
    buffer = torch.zeros(num_steps, num_envs, *stored, dtype=torch.uint8)
    if pin_memory:
        buffer = buffer.pin_memory()
    return buffer.permute(0, 1, 4, 2, 3) if image else buffer


def masked_mean(x: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1 (``count`` = mask.sum(), clamped >= 1)."""
    return (x * mask).sum() / count


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[returns - values] / Var[returns] over valid samples (1 = perfect critic, <=0 = useless)."""
    count = mask.sum().clamp_min(1.0)
    var_ret = masked_mean((returns - masked_mean(returns, mask, count)) ** 2, mask, count)
    err = returns - values
    var_err = masked_mean((err - masked_mean(err, mask, count)) ** 2, mask, count)
    return torch.where(var_ret > 0, 1.0 - var_err / var_ret.clamp_min(1e-12), torch.full_like(var_ret, float("nan")))


def _fused_adam(policy: nn.Module, lr: float, eps: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one vectorized pass per parameter instead of a dozen elementwise ops).

    On CUDA it is one kernel for all parameters; on CPU (torch >= 2.4) it took the optimizer's share of a
    Nature-CNN update from 9% to 3% (profiled). Torch versions or devices without it get plain Adam.
    """
    try:
        return torch.optim.Adam(policy.parameters(), lr=lr, eps=eps, fused=True)
    except RuntimeError:
        return torch.optim.Adam(policy.parameters(), lr=lr, eps=eps)


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AMX or AVX-512-BF16)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the probe: assume not
        return False


def trunk_dtype(config: PPOConfig, device_type: str, cpu_bf16_kernels: bool | None = None) -> torch.dtype | None:
    """The conv trunk's autocast dtype on ``device_type``: bfloat16 on CUDA with ``amp``, on CPU with ``cpu_bf16``
    where the CPU has bfloat16 kernels (``cpu_bf16_kernels``, default :func:`cpu_has_bf16`); else None (float32)."""
    if device_type == "cuda":
        return torch.bfloat16 if config.amp else None
    if device_type == "cpu" and config.cpu_bf16:
        has_kernels = cpu_has_bf16() if cpu_bf16_kernels is None else cpu_bf16_kernels
        return torch.bfloat16 if has_kernels else None
    return None


class PPOLearner:
    """Owns the optimizer and performs PPO updates of ``policy`` (optionally DDP-wrapped)."""

    STAT_NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")
    BC_STAT_NAMES = ("bc_loss", "bc_accuracy")

    def __init__(self, policy: nn.Module, config: PPOConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.policy = policy
        self.config = config or PPOConfig()
        self.device = torch.device(device)
        self.module = unwrap(policy)
        self.recurrent: bool = bool(getattr(self.module, "recurrent", False))
        self.trunk_dtype = trunk_dtype(self.config, self.device.type)  # None: the trunk runs in float32
        if hasattr(self.module, "set_mixed_precision"):
            # On the module, not around the update, so rollouts (act) use identical numerics.
            self.module.set_mixed_precision(self.trunk_dtype, self.device.type)
        self.optimizer = _fused_adam(policy, self.config.lr, self.config.adam_eps)
        self._ddp = isinstance(policy, nn.parallel.DistributedDataParallel)
        # Minibatch shuffling has its own generator (seeded from the global one, so torch.manual_seed still
        # makes runs reproducible): the update may run in a background thread while rollouts draw from the
        # global generator, and the shuffle order then must not depend on thread timing. Checkpointed too.
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))

    # ------------------------------------------------------------------ update
    def update(self, batch: RolloutBatch, lr_scale: float = 1.0, ent_scale: float = 1.0,
               demo: DemoTargets | None = None) -> dict[str, float]:
        """Run ``num_epochs`` x ``num_minibatches`` gradient steps on one rollout; return mean statistics.

        ``lr_scale``/``ent_scale`` multiply the configured learning rate and
        entropy coefficient (learning-rate annealing, automatic un-sticking).
        ``demo`` (:mod:`curriculum_ppo.imitation`) adds a behaviour-cloning term to every minibatch:
        ``demo.samples`` of its frames, drawn with the shuffle generator, go through the same forward
        pass, and ``demo.coef`` times their cross-entropy against the demo's actions joins the loss
        (statistics ``bc_loss``, ``bc_accuracy``). The PPO terms see only the rollout's samples.
        """
        cfg = self.config
        batch.validate()
        if self.recurrent and batch.initial_state is None:
            raise ValueError("a recurrent policy needs RolloutBatch.initial_state")
        if demo is not None and self.recurrent:
            raise UserError("--demo-bc-coef works with feed-forward policies only (not --recurrent)")
        lr = cfg.lr * lr_scale
        ent_coef = cfg.ent_coef * ent_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        T, B = batch.num_steps, batch.num_envs
        mask_cpu = batch.loss_mask.detach().to("cpu", torch.float32)  # the one up-front sync
        perms, run_mb = self._plan_minibatches(mask_cpu)
        n_mb = len(run_mb[0])
        data = batch.to(self.device)
        perms = perms.to(self.device, non_blocking=True)
        if demo is not None:  # every minibatch's demo frames, drawn up front like the shuffles
            demo = demo.to(self.device)
            demo_idx = torch.randint(demo.actions.numel(), (cfg.num_epochs, n_mb, demo.samples),
                                     generator=self.generator).to(self.device, non_blocking=True)
        if not self.recurrent:  # flatten [T, B] -> [T*B] once
            flat = {
                name: getattr(data, name).reshape(T * B, *getattr(data, name).shape[2:])
                for name in ("obs", "actions", "logprobs", "values", "advantages", "returns", "loss_mask")
            }

        self.policy.train()
        stats: list[Tensor] = []
        epochs_done = 0
        for epoch in range(cfg.num_epochs):
            epoch_kl: list[Tensor] = []
            for mb, idx in enumerate(perms[epoch].tensor_split(n_mb)):
                if not run_mb[epoch][mb]:
                    continue
                if self.recurrent:
                    logits, new_values, _ = self.policy(
                        data.obs[:, idx], data.initial_state[idx], data.episode_starts[:, idx], sequence=True
                    )
                    mb_data = {
                        name: getattr(data, name)[:, idx]
                        for name in ("actions", "logprobs", "values", "advantages", "returns", "loss_mask")
                    }
                else:
                    obs = flat["obs"][idx]
                    if demo is not None:  # the demo frames join the same forward pass (one per backward, for DDP)
                        d_idx = demo_idx[epoch, mb]
                        obs = torch.cat([obs, demo.obs[d_idx]])
                    logits, new_values, _ = self.policy(obs)
                    mb_data = {name: flat[name][idx] for name in flat if name != "obs"}
                    if demo is not None:
                        n = idx.numel()
                        mb_data.update(demo_logits=logits[n:], demo_actions=demo.actions[d_idx])
                        logits, new_values = logits[:n], new_values[:n]
                mb_stats = self._minibatch_step(logits, new_values, mb_data, ent_coef,
                                                demo.coef if demo is not None else 0.0)
                stats.append(mb_stats)
                epoch_kl.append(mb_stats[3])
            epochs_done += 1
            if cfg.target_kl is not None and epoch_kl:
                kl = torch.stack(epoch_kl).mean()
                if self._ddp and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(kl)
                    kl /= torch.distributed.get_world_size()
                if kl.item() > cfg.target_kl:  # one sync per epoch, only when early stopping is on
                    break

        ev = explained_variance(data.values, data.returns, data.loss_mask)
        names = (*self.STAT_NAMES, *(self.BC_STAT_NAMES if demo is not None else ()))
        if stats:
            means = torch.cat([torch.stack(stats).mean(0), ev.reshape(1)]).tolist()  # the one final sync
        else:
            means = [float("nan")] * len(names) + [ev.item()]
        out = dict(zip((*names, "explained_variance"), means))
        out.update(
            lr=lr,
            ent_coef=ent_coef,
            num_gradient_steps=float(len(stats)),
            epochs=float(epochs_done),
            valid_fraction=float(mask_cpu.mean()),
        )
        return out

    def _plan_minibatches(self, mask_cpu: Tensor) -> tuple[Tensor, list[list[bool]]]:
        """Shuffle orders for all epochs ([epochs, units]) and which minibatches have any valid sample.

        Units are environment columns (recurrent: whole sequences stay together)
        or single transitions (feed-forward). A minibatch without valid samples
        is skipped: its loss is zero, but an Adam step would still move the
        weights along the stale momentum.
        """
        cfg = self.config
        T, B = mask_cpu.shape
        unit_mask = mask_cpu.sum(0) if self.recurrent else mask_cpu.reshape(-1)
        n_units = unit_mask.numel()
        n_mb = max(1, min(cfg.num_minibatches, n_units))
        perms = torch.stack([torch.randperm(n_units, generator=self.generator) for _ in range(cfg.num_epochs)])
        valid = torch.stack([torch.stack([unit_mask[idx].sum() for idx in p.tensor_split(n_mb)]) for p in perms])
        if self._ddp and torch.distributed.is_initialized():
            # Every rank must run the same number of backward passes (DDP all-reduces inside each one), so a
            # minibatch slot is skipped only when it is empty on all ranks.
            valid = valid.to(self.device)
            torch.distributed.all_reduce(valid)
            valid = valid.cpu()
        return perms, (valid > 0).tolist()

    def _minibatch_step(self, logits: Tensor, new_values: Tensor, mb: dict[str, Tensor], ent_coef: float,
                        bc_coef: float = 0.0) -> Tensor:
        """One gradient step; returns [policy_loss, value_loss, entropy, approx_kl, clipfrac, grad_norm], and
        [bc_loss, bc_accuracy] after them when ``mb`` holds ``demo_logits`` and ``demo_actions``."""
        cfg = self.config
        mask = mb["loss_mask"]
        count = mask.sum().clamp_min(1.0)

        log_probs = torch.log_softmax(logits.float(), dim=-1)
        new_logprob = log_probs.gather(-1, mb["actions"].unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        logratio = new_logprob - mb["logprobs"]
        ratio = logratio.exp()

        adv = mb["advantages"]
        if cfg.norm_adv:
            adv_mean = masked_mean(adv, mask, count)
            adv_var = ((adv - adv_mean) ** 2 * mask).sum() / (count - 1.0).clamp_min(1.0)
            adv = (adv - adv_mean) / (adv_var.sqrt() + 1e-8)

        pg_loss = masked_mean(
            torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef)), mask, count
        )
        new_values = new_values.float()
        v_loss_unclipped = (new_values - mb["returns"]) ** 2
        if cfg.clip_vloss:
            v_clipped = mb["values"] + (new_values - mb["values"]).clamp(-cfg.clip_coef, cfg.clip_coef)
            v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, (v_clipped - mb["returns"]) ** 2), mask, count)
        else:
            v_loss = 0.5 * masked_mean(v_loss_unclipped, mask, count)
        entropy_mean = masked_mean(entropy, mask, count)
        loss = pg_loss - ent_coef * entropy_mean + cfg.vf_coef * v_loss
        cloning = "demo_logits" in mb
        if cloning:
            demo_logits = mb["demo_logits"].float()
            bc_loss = nn.functional.cross_entropy(demo_logits, mb["demo_actions"])
            loss = loss + bc_coef * bc_loss

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()

        with torch.no_grad():
            approx_kl = masked_mean((ratio - 1.0) - logratio, mask, count)  # unbiased, non-negative estimator
            clipfrac = masked_mean(((ratio - 1.0).abs() > cfg.clip_coef).float(), mask, count)
            out = [pg_loss, v_loss, entropy_mean, approx_kl, clipfrac, grad_norm.float()]
            if cloning:
                out += [bc_loss, (demo_logits.argmax(-1) == mb["demo_actions"]).float().mean()]
            return torch.stack(out).detach()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Policy weights, optimizer state, shuffle RNG and config, for checkpoints (load with map_location)."""
        return {
            "policy": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore policy weights and optimizer state (the config of the running learner is kept)."""
        self.module.load_state_dict(state["policy"])
        # The saved param groups carry the saving process's kernel choice ("fused"), which torch would
        # adopt; keep this process's (a checkpoint from before fused CPU Adam, or from a GPU run, resumes
        # with the kernel that suits this device). Loading then puts Adam's step counters where it needs them.
        fused = self.optimizer.param_groups[0].get("fused")
        optimizer_state = dict(state["optimizer"])
        optimizer_state["param_groups"] = [{**group, "fused": fused} for group in optimizer_state["param_groups"]]
        self.optimizer.load_state_dict(optimizer_state)
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu())
