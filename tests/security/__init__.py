"""The public surface tried as an attacker would: each test failed before its fix."""
