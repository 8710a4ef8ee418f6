"""AWS adapters: the only code that knows boto3, item attribute names and ClientError."""
