"""An app that fails to import."""

import usm_this_module_does_not_exist  # noqa: F401

app = None
