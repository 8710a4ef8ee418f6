"""The ``tokenbroker`` command line: admin (clients, devices), audit and the local stack."""
