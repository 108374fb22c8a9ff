"""prunejob."""
