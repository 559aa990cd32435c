"""Active security verification (`sandtrap verify-security`): probe.py attacks from inside a
sandbox, checks.py judges, runner.py runs it all against the real engine and service."""
