"""One exception type for everything the user can fix.

The CLI turns a :class:`UserError` into one readable line on stderr and a
nonzero exit code; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input (file, flag, game) described in one line the user can act on."""
