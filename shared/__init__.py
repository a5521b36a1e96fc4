"""Code both sides use: settings, Redis key names, the push schema."""
