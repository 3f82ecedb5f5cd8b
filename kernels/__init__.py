"""TIR kernel templates (one family per module or subpackage) and the device's small C runtime (runtime/)."""

from .macro_lookup import install as _install_macro_lookup

_install_macro_lookup()
