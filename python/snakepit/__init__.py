# SPDX-License-Identifier: Apache-2.0
"""The Python side of snakepit-cnode: term types and encoders used by every worker."""

from snakepit import encoders
from snakepit._types import Atom, Fun, Opaque, Pid, Port, Reference

__all__ = ["Atom", "Fun", "Opaque", "Pid", "Port", "Reference", "encoders"]
