"""Optional plugins. Each registers itself on an :class:`~pocketjobs.App`; the kernel never
imports them."""
