"""operator/prunejob_operator."""
