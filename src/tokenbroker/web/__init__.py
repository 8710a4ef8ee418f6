"""The HTTP edge: API Gateway events in, API Gateway responses out.

``http`` alone knows statuses and headers; ``requests`` parses events into domain
requests; ``endpoints`` glues one parsed request to one service call.
"""
