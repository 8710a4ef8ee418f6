"""tokenbroker: DPoP-bound (RFC 9449) access tokens on AWS, validated at the edge."""

__version__ = "0.1.0"
