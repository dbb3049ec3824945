"""Actor-critic networks for Atari: a conv trunk, an optional GRU, and policy/value heads.

Two trunks are offered:

* ``"nature"`` -- the Nature-DQN CNN (32@8/4, 64@4/2, 64@3/1, FC512). Small and
  fast; the right default when the whole budget is a few CPU cores.
* ``"large"`` -- the network of the original atari-reset code (Salimans & Chen
  2018): 64@8/4, 128@4/2, 128@3/1, FC800 followed by a LayerNorm without
  learned affine parameters (as in their ``GRUPolicy``). About 4-5x the compute.

With ``recurrent=True`` a GRU of the FC width runs on top of the trunk and the
heads read ``concat(gru_output, trunk_features)``. The skip connection is taken
from atari-reset: early in training the GRU carries little information and the
heads can still use the current frame directly.

Numerics: observations arrive as uint8 and are scaled to [0, 1] inside the
network, so rollouts can store (and ship to the GPU) 4x smaller tensors. When
mixed precision is switched on (:meth:`ActorCritic.set_mixed_precision`, done by
the learner on CUDA, and on CPU with ``--cpu-bf16``) only the conv+FC trunk runs in bfloat16; the GRU recurrence
and both heads stay in float32. PPO divides new by old action probabilities, and
with clip 0.1 the ~1% rounding error of bfloat16 logits would already be a
visible fraction of the trust region; a 128-step recurrence would also
accumulate bfloat16 rounding. Because the switch lives on the module, rollouts
(``act``) and training see the same numerics, so the first PPO ratio is 1 up to
float32 rounding. One caveat on GPUs: cuDNN runs the GRU (``nn.GRU``) with TF32
matmuls unless ``torch.backends.cudnn.allow_tf32`` is False (torch's default is
True, and the policy does not change process-wide settings). TF32 rounds to about
1e-3, ten times finer than bfloat16; set the flag to False for a float32 recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import behaviour_log_probs

ARCHS = ("nature", "large")


@dataclass
class PolicyConfig:
    """Shape of the actor-critic network.

    ``obs_shape`` is (C, H, W) of one uint8 observation, C being stacked frames
    times colour channels: (4, 84, 84) for 4 grayscale frames, (12, 105, 80) for
    4 RGB frames at half Atari resolution. ``hidden_size`` overrides the FC (and
    GRU) width of the architecture (512 nature, 800 large); small values make
    quick experiments and tests cheap.
    """

    num_actions: int
    arch: str = "nature"
    recurrent: bool = False
    obs_shape: tuple[int, int, int] = (4, 84, 84)
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(x) for x in self.obs_shape)  # JSON round trips turn it into a list
        if len(self.obs_shape) != 3:
            raise UserError(f"obs_shape must be (C, H, W), got {self.obs_shape}")


# (out_channels, kernel, stride) per conv layer, and the FC width.
_TRUNKS: dict[str, tuple[list[tuple[int, int, int]], int, bool]] = {
    #          convs                                   fc    layernorm
    "nature": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512, False),
    "large": ([(64, 8, 4), (128, 4, 2), (128, 3, 1)], 800, True),
}


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (CleanRL / baselines convention).

    sqrt(2) keeps ReLU activations at unit scale through the trunk; the policy
    head uses 0.01 so the initial policy is near-uniform (maximal exploration),
    the value head uses 1.
    """
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def unwrap(model: nn.Module) -> nn.Module:
    """Return the user's module inside DistributedDataParallel / DataParallel / torch.compile.

    Use it for anything that is not a gradient-carrying forward pass: ``act``
    during rollouts, ``state_dict`` for checkpoints, reading ``config``.
    Training forward passes must go through the wrapper itself (``model(...)``),
    otherwise DDP never sees them and gradients are not all-reduced.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def sample_categorical(logits: Tensor) -> Tensor:
    """Sample from softmax(logits) with the Gumbel-max trick.

    Unlike ``torch.distributions.Categorical`` (argument validation) this never
    synchronizes a CUDA device with the host, which matters in the rollout loop.
    """
    uniform = torch.rand_like(logits, dtype=torch.float32)
    gumbel = -torch.log(-torch.log(uniform))
    return (logits.float() + gumbel).argmax(dim=-1)


def choose_actions(logits: Tensor, deterministic: bool = False, epsilon: Tensor | None = None,
                   temperature: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(action [B], log-probability [B]) from policy logits: sampled, greedy, or sampled from the
    exploring distribution that ``epsilon`` and ``temperature`` give (see
    :func:`curriculum_ppo.exploration.behaviour_log_probs`), whose log-probability is then returned."""
    if deterministic:
        log_probs = torch.log_softmax(logits.float(), dim=-1)
    else:
        log_probs = behaviour_log_probs(logits.float(), epsilon, temperature)
    action = log_probs.argmax(dim=-1) if deterministic else sample_categorical(log_probs)
    return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)


@dataclass
class EpisodePieces:
    """How a [T, B] segment splits into per-env episode pieces (see :func:`episode_pieces`)."""

    slot: Tensor  # [B*T]: where step (b, t), env-major, goes in the padded [longest, pieces] layout (flattened)
    lengths: Tensor  # [pieces] steps per piece (int64, on the CPU, as pack_padded_sequence wants)
    env: Tensor  # [pieces] the env of each piece
    continues: Tensor  # [pieces] True for a piece that continues the env's episode from before the segment
    last: Tensor  # [B] the index of each env's last piece (its final state is the env's)


def episode_pieces(episode_starts: Tensor) -> EpisodePieces:
    """Cut each env's column of a [T, B] segment at its episode starts.

    Pieces are numbered env by env, in time order; a piece begins at t = 0 or at an episode start.
    Pure index arithmetic on the CPU, so the GRU can run all pieces as one packed sequence batch.
    """
    T, B = episode_starts.shape
    begins = episode_starts.t().clone()  # [B, T]
    begins[:, 0] = True
    flat = begins.reshape(-1)
    piece = flat.long().cumsum(0) - 1  # [B*T] piece of each step
    n = int(piece[-1]) + 1
    step = torch.arange(T).repeat(B)
    first_step = step[flat]  # [pieces] t at which each piece begins
    return EpisodePieces(
        slot=(step - first_step[piece]) * n + piece,
        lengths=torch.bincount(piece, minlength=n),
        env=torch.arange(B).repeat_interleave(T)[flat],
        continues=~episode_starts.t().reshape(-1)[flat],
        last=piece.view(B, T)[:, -1].clone(),
    )


def _rename_gru_cell_keys(module, state_dict, prefix, *_args) -> None:
    """Load checkpoints written before the GRU became an ``nn.GRU``: it was an ``nn.GRUCell``, whose
    parameters have the same shapes and gate order but no ``_l0`` suffix."""
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        if prefix + name in state_dict and prefix + name + "_l0" not in state_dict:
            state_dict[prefix + name + "_l0"] = state_dict.pop(prefix + name)


class ActorCritic(nn.Module):
    """Shared-trunk actor-critic for discrete actions.

    One step:      ``forward(obs [B,C,H,W], state [B,H], episode_starts [B])``
                   -> ``(logits [B,A], value [B], new_state [B,H] | None)``
    Whole segment: ``forward(obs [T,B,C,H,W], state0, episode_starts [T,B], sequence=True)``
                   -> ``(logits [T,B,A], values [T,B], final_state | None)``

    The sequence mode is a flag on ``forward`` (rather than only a separate
    method) so that a DistributedDataParallel wrapper sees the training pass and
    synchronizes gradients: DDP hooks only ``__call__``/``forward``.
    ``forward_sequence`` is a convenience alias for unwrapped use.

    ``episode_starts[t, b]`` is true when ``obs[t, b]`` is the first observation
    of a new episode; the hidden state is zeroed *before* that observation is
    processed, so no memory leaks across episodes.
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if config.arch not in _TRUNKS:
            raise UserError(f"unknown network architecture {config.arch!r}; choose one of {', '.join(ARCHS)}")
        if config.num_actions < 1:
            raise UserError(f"num_actions must be >= 1, got {config.num_actions}")
        self.config = config
        convs, fc_size, use_layernorm = _TRUNKS[config.arch]
        fc_size = config.hidden_size or fc_size
        self.hidden_size = fc_size
        self.autocast_dtype: torch.dtype | None = None
        self.autocast_device = "cuda"
        # How the GRU handles episode starts inside a segment (see _gru_sequence); None: chosen per call.
        self.gru_packed: bool | None = None

        layers: list[nn.Module] = []
        in_channels = config.obs_shape[0]
        for out_channels, kernel, stride in convs:
            layers += [layer_init(nn.Conv2d(in_channels, out_channels, kernel, stride)), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.cnn = nn.Sequential(*layers)

        with torch.no_grad():  # the flattened size depends on (H, W); measure it instead of deriving it
            try:
                n_flat = self.cnn(torch.zeros(1, *config.obs_shape)).shape[1]
            except RuntimeError:
                raise UserError(
                    f"observation shape {tuple(config.obs_shape)} is too small for the {config.arch!r} CNN "
                    "(needs H, W >= 36)"
                ) from None

        fc: list[nn.Module] = [layer_init(nn.Linear(n_flat, fc_size))]
        if use_layernorm:
            fc.append(nn.LayerNorm(fc_size, elementwise_affine=False))
        fc.append(nn.ReLU())
        self.fc = nn.Sequential(*fc)

        head_in = fc_size
        self.gru: nn.GRU | None = None
        if config.recurrent:
            self.gru = nn.GRU(fc_size, fc_size)
            for name, param in self.gru.named_parameters():
                if "weight" in name:
                    nn.init.orthogonal_(param, 1.0)
                else:
                    nn.init.constant_(param, 0.0)
            self.gru.register_load_state_dict_pre_hook(_rename_gru_cell_keys)
            head_in = 2 * fc_size
        self.policy_head = layer_init(nn.Linear(head_in, config.num_actions), std=0.01)
        self.value_head = layer_init(nn.Linear(head_in, 1), std=1.0)
        # NHWC ("channels_last") lets oneDNN/cuDNN pick their fast convolution kernels (the speed-up
        # is in docs/benchmarks.md). The weights' layout is invisible to users (state_dicts load
        # either way).
        self.cnn.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ helpers
    @property
    def recurrent(self) -> bool:
        return self.gru is not None

    def set_mixed_precision(self, dtype: torch.dtype | None, device_type: str = "cuda") -> None:
        """Run the conv/FC trunk under autocast with ``dtype`` (None: float32) for inputs on ``device_type``.

        Inputs on other devices run in float32 (a CUDA-trained module evaluated on a CPU keeps float32).
        GRU and heads always stay float32 (see module doc).
        """
        self.autocast_dtype, self.autocast_device = dtype, device_type

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor | None:
        """Zero GRU state [B, hidden] for a fresh batch of environments, or None."""
        if self.gru is None:
            return None
        return torch.zeros(batch_size, self.hidden_size, device=device)

    def _encode(self, obs: Tensor) -> Tensor:
        """uint8 [N,C,H,W] -> float32 features [N, hidden]."""
        use_amp = self.autocast_dtype is not None and obs.device.type == self.autocast_device
        # One pass from uint8 to float in NHWC; no layout change when obs is already NHWC (rollout_obs_buffer).
        x = obs.to(torch.float32, memory_format=torch.channels_last).div_(255.0)
        with torch.autocast(device_type=obs.device.type, dtype=self.autocast_dtype, enabled=use_amp):
            features = self.fc(self.cnn(x))
        return features.float()

    def _gru_sequence(self, features: Tensor, state: Tensor, episode_starts: Tensor | None,
                      packed: bool | None = None) -> tuple[Tensor, Tensor]:
        """GRU over a segment: features [T, B, H] -> (outputs [T, B, H], final state [B, H]).

        The state of an env is zeroed just before the step at which its episode starts, which
        ``nn.GRU`` cannot do inside a sequence. Two ways around it, same results:

        * ``packed``: each env's column is cut into its episode pieces (:func:`episode_pieces`)
          and all pieces run as one packed ``nn.GRU`` call, each from zero or, for a piece that
          continues an episode, from the env's ``state``. One cuDNN call per minibatch however many
          episodes start in it, so always used on GPUs. On CPUs the recurrence is then only as
          deep as the longest piece, but each step of a packed batch costs more: measured on 2-core
          CPUs (``scripts/bench_gru_paths.py``; figures in docs/benchmarks.md, "The GRU's two
          paths"), packed wins with few envs per minibatch and loses with many envs whose episode
          pieces are long. So CPUs use it for minibatches of at most 4 envs or when the longest
          piece is at most half the segment.
        * stretches: the segment is cut at every step where some env starts an episode, one
          ``nn.GRU`` call per stretch.

        Both replaced a Python loop of ``GRUCell`` steps, hundreds of small kernels per minibatch,
        which made recurrent updates many times slower than the CNN's on a GPU (docs/benchmarks.md).
        Finding the cuts reads ``episode_starts`` on the host: one
        sync per segment (none for a single step, as in rollouts).
        """
        if features.is_cuda:
            self.gru.flatten_parameters()  # a deep copy (the Trainer's behaviour policy) unflattens the weights
        T = features.shape[0]
        if episode_starts is not None:
            episode_starts = episode_starts.bool()
            state = state * (~episode_starts[0]).to(state.dtype).unsqueeze(-1)
        starts = None if episode_starts is None or T == 1 else episode_starts.cpu()  # the one sync
        if starts is None or not starts[1:].any():
            out, final = self.gru(features, state.unsqueeze(0).contiguous())
            return out, final.squeeze(0)
        pieces = episode_pieces(starts)
        packed = self.gru_packed if packed is None else packed
        if packed is None:  # see the docstring
            packed = features.is_cuda or features.shape[1] <= 4 or 2 * int(pieces.lengths.max()) <= T
        if packed:
            return self._gru_packed(features, state, pieces)
        outputs = []
        cuts = [0] + [t for t in starts.any(dim=1).nonzero().flatten().tolist() if t > 0]
        keep = (~episode_starts).to(state.dtype).unsqueeze(-1)  # [T, B, 1]: 0 where an episode starts
        for lo, hi in zip(cuts, cuts[1:] + [T]):
            out, final = self.gru(features[lo:hi], (state * keep[lo]).unsqueeze(0).contiguous())
            outputs.append(out)
            state = final.squeeze(0)
        return torch.cat(outputs), state

    def _gru_packed(self, features: Tensor, state: Tensor, pieces: EpisodePieces) -> tuple[Tensor, Tensor]:
        """The packed way of :meth:`_gru_sequence`."""
        T, B = features.shape[:2]
        dev = features.device
        slot, env, last = (x.to(dev, non_blocking=True) for x in (pieces.slot, pieces.env, pieces.last))
        n, longest = len(pieces.lengths), int(pieces.lengths.max())
        by_env = features.transpose(0, 1).reshape(B * T, -1)  # env-major, as the pieces are numbered
        padded = by_env.new_zeros(longest * n, by_env.shape[1]).index_copy(0, slot, by_env).view(longest, n, -1)
        h0 = state[env] * pieces.continues.to(dev, state.dtype, non_blocking=True).unsqueeze(-1)
        packed = nn.utils.rnn.pack_padded_sequence(padded, pieces.lengths, enforce_sorted=False)
        out, h_n = self.gru(packed, h0.unsqueeze(0).contiguous())
        out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=longest)
        outputs = out.reshape(longest * n, -1)[slot].view(B, T, -1).transpose(0, 1)
        return outputs, h_n.squeeze(0)[last]

    def _heads(self, core: Tensor) -> tuple[Tensor, Tensor]:
        return self.policy_head(core), self.value_head(core).squeeze(-1)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        obs: Tensor,
        state: Tensor | None = None,
        episode_starts: Tensor | None = None,
        sequence: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One step (default) or a whole [T, B] segment (``sequence=True``); see class doc."""
        if sequence:
            return self._forward_sequence(obs, state, episode_starts)
        features = self._encode(obs)
        if self.gru is None:
            logits, value = self._heads(features)
            return logits, value, None
        if state is None:
            state = self.initial_state(obs.shape[0], obs.device)
        with torch.autocast(device_type=obs.device.type, enabled=False):
            starts = None if episode_starts is None else episode_starts.unsqueeze(0)
            out, new_state = self._gru_sequence(features.unsqueeze(0), state, starts)
            logits, value = self._heads(torch.cat([out.squeeze(0), features], dim=-1))
        return logits, value, new_state

    def _forward_sequence(
        self, obs: Tensor, state: Tensor | None, episode_starts: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        T, B = obs.shape[:2]
        # The CNN has no time dependence: run it once over all T*B frames (the expensive, parallel part).
        features = self._encode(obs.reshape(T * B, *obs.shape[2:])).view(T, B, -1)
        if self.gru is None:
            logits, values = self._heads(features)
            return logits, values, None
        if state is None:
            state = self.initial_state(B, obs.device)
        with torch.autocast(device_type=obs.device.type, enabled=False):
            outputs, state = self._gru_sequence(features, state, episode_starts)
            logits, values = self._heads(torch.cat([outputs, features], dim=-1))
        return logits, values, state

    def forward_sequence(
        self, obs: Tensor, state0: Tensor | None, episode_starts: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Logits [T,B,A] and values [T,B] for a rollout segment obs [T,B,C,H,W].

        Equivalent to calling ``forward`` step by step. Under DDP call
        ``ddp_model(obs, state0, starts, sequence=True)`` instead (see class doc).
        """
        logits, values, _ = self._forward_sequence(obs, state0, episode_starts)
        return logits, values

    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        state: Tensor | None = None,
        episode_starts: Tensor | None = None,
        deterministic: bool = False,
        epsilon: Tensor | None = None,
        temperature: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Pick actions for a batch of environments: (action [B] int64, logprob [B], value [B], new_state).

        ``epsilon`` and ``temperature`` ([B], optional) sample from ``(1 - eps) * softmax(logits / T) +
        eps * uniform`` instead and return its log-probability (see :mod:`curriculum_ppo.exploration`).
        """
        logits, value, new_state = self(obs, state, episode_starts)
        action, logprob = choose_actions(logits, deterministic, epsilon, temperature)
        return action, logprob, value, new_state


def build_policy(config: PolicyConfig) -> nn.Module:
    """The CNN actor-critic for Atari; ``arch="mlp"`` gives the small MLP used by the toy env."""
    if config.arch == "mlp":
        from curriculum_ppo.ppo.mlp_policy import MLPActorCritic

        return MLPActorCritic(config)
    return ActorCritic(config)
