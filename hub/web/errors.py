"""A page's refusal (bad form, expired sign-in, not allowed), shown as a page with its status,
and the redirect to sign-in when the workspace session has ended."""
from __future__ import annotations


class PageError(Exception):
    """Answered with the `error` page: a title and a sentence saying what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


class SignInRequired(Exception):
    """The workspace session is missing, idle too long or ended: sign in, then come back here."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path
