"""Authorization: policy model, engine, filter and `meshward check`."""
