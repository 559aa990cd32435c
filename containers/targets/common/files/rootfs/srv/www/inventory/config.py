import os


def _env_file(path):
    values = {}
    try:
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    values[key.strip()] = value.strip().strip('"')
    except FileNotFoundError:
        pass
    return values


_HERE = os.path.dirname(os.path.abspath(__file__))
_ENV = {**_env_file(os.path.join(_HERE, ".env")), **os.environ}

SECRET_KEY = _ENV.get("SECRET_KEY", "dev")
DATABASE = _ENV.get("DATABASE", os.path.join(_HERE, "instance", "inventory.db"))
MAIL_SERVER = _ENV.get("MAIL_SERVER", "localhost")
MAIL_USERNAME = _ENV.get("MAIL_USERNAME", "")
MAIL_PASSWORD = _ENV.get("MAIL_PASSWORD", "")
ADMIN_EMAIL = _ENV.get("ADMIN_EMAIL", "")
