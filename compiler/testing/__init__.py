"""Property-based testing helpers for passes (see strategies and checks)."""
