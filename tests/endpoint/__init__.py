"""Handler-level tests of the token and discovery Lambdas on a moto deployment built
from the real template.yaml."""
