"""SessionRequest, Decision, NoWorkerAvailable."""

from __future__ import annotations

from duplex.routing import NoWorkerAvailable, NoWorkerCause, SessionRequest


def test_request_describes_itself_for_error_messages() -> None:
    """describe() names the language, then the model and capabilities when given."""
    assert SessionRequest(None, "en").describe() == "language='en'"
    full = SessionRequest("piper-en", "en", ("zero_shot", "ssml"))
    assert full.describe() == "language='en', model 'piper-en', capabilities zero_shot, ssml"


def test_no_worker_available_carries_reason_and_cause() -> None:
    """The reason is the exception text; the cause says which filter emptied the set."""
    exc = NoWorkerAvailable("no worker for language='fr'", NoWorkerCause.LANGUAGE)
    assert str(exc) == exc.reason == "no worker for language='fr'"
    assert exc.cause is NoWorkerCause.LANGUAGE
