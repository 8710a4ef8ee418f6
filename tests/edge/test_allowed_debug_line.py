"""The allowed request's debug line is built only when it can go anywhere: the edge asks
``_debugging`` first (the line costs ~2 us per allowed request to build and drop). It
must still be written when DEBUG is on (tests/edge/test_authorizer_faults.py counts it)
or when Powertools buffers debug lines."""

from __future__ import annotations

import logging
import uuid

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.buffer import LoggerBufferConfig

from tokenbroker.web.edge import _debugging


def _service() -> str:
    return f"debug-line-{uuid.uuid4().hex}"


def test_an_info_logger_without_a_buffer_skips_the_debug_line() -> None:
    assert not _debugging(Logger(service=_service(), level="INFO"))


def test_a_debug_logger_writes_it() -> None:
    assert _debugging(Logger(service=_service(), level="DEBUG"))


def test_a_logger_made_verbose_later_writes_it() -> None:
    logger = Logger(service=_service(), level="INFO")
    logging.getLogger(logger.name).setLevel(logging.DEBUG)
    assert _debugging(logger)


def test_a_buffering_logger_writes_it_into_its_buffer() -> None:
    config = LoggerBufferConfig(max_bytes=10_240)
    assert _debugging(Logger(service=_service(), level="INFO", buffer_config=config))
