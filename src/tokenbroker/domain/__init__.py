"""Pure domain core: RFC logic, policy, typed errors and ports.

Nothing in this package imports boto3, Powertools or reads the environment or the wall
clock; a ``Clock`` is passed in.
"""
