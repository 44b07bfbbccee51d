"""Signed, single-use tokens for email verification links."""

from django.contrib.auth.tokens import PasswordResetTokenGenerator


class EmailVerificationTokenGenerator(PasswordResetTokenGenerator):
    """Tokens like the password reset ones, but under their own salt.

    The hash covers the user's verification time, so a link stops working
    once the address is verified. Links expire after PASSWORD_RESET_TIMEOUT.
    """

    key_salt = "portal.tokens.EmailVerificationTokenGenerator"

    def _make_hash_value(self, user, timestamp):
        membership = getattr(user, "membership", None)
        verified_at = membership.email_verified_at if membership else None
        verified = "" if verified_at is None else verified_at.isoformat()
        return f"{user.pk}{user.email}{verified}{timestamp}"


email_verification_token = EmailVerificationTokenGenerator()
