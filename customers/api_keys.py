"""API keys: creating, revoking and checking the keys customers' systems use.

A key looks like `am_Ab3dEf9h_<43 random characters>`. Its first 11
characters are its prefix, stored in clear and unique, so a request's key
is found with one indexed lookup. The whole key is stored only as a
SHA-256 hash: the random part has 256 bits, so a fast hash is enough and
no salt is needed. The key itself is returned once, by `api_key_create`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from customers.models import ApiKey, Customer

logger = logging.getLogger(__name__)

KEY_START = "am_"
PREFIX_ID_LENGTH = 8
PREFIX_LENGTH = len(KEY_START) + PREFIX_ID_LENGTH
SECRET_BYTES = 32
# `last_used_at` is written at most this often per key, so a busy key does
# not cost a database write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
PREFIX_ALPHABET = string.ascii_letters + string.digits


class ApiKeyInvalid(Exception):
    """Raised for a key that is malformed, unknown or revoked."""


def secret_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_create(
    *, customer: Customer, name: str, created_by: AbstractBaseUser | None = None
) -> tuple[ApiKey, str]:
    """Create an API key for `customer`; return it with the key, shown only now.

    Raises ValidationError for an empty or too long name, or a customer
    that is not active.
    """
    name = name.strip()
    if not name:
        raise ValidationError({"name": "The key name is empty; say what it is for."})
    max_length = ApiKey._meta.get_field("name").max_length
    if len(name) > max_length:
        raise ValidationError(
            {
                "name": f"The key name has {len(name)} characters; the maximum is {max_length}."
            }
        )
    if customer.status != Customer.Status.ACTIVE:
        raise ValidationError(
            {
                "customer": f"Customer {customer.slug} is {customer.status}; "
                "only active customers get API keys."
            }
        )
    # 62**8 prefixes make a collision rare; a few attempts make it harmless.
    for _ in range(5):
        prefix = KEY_START + "".join(
            secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_ID_LENGTH)
        )
        key = f"{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    customer=customer,
                    name=name,
                    prefix=prefix,
                    secret_hash=secret_hash(key),
                    created_by=created_by,
                )
        except IntegrityError:
            continue
        logger.info("Customer %s: API key %s created (%s)", customer.slug, prefix, name)
        return api_key, key
    raise RuntimeError("No unused API key prefix found in 5 attempts.")


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke `api_key` now; revoking it again keeps the first time."""
    if api_key.revoked_at is None:
        now = timezone.now()
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        api_key.refresh_from_db(fields=["revoked_at"])
        logger.info(
            "Customer %s: API key %s revoked",
            api_key.customer.slug,
            api_key.prefix,
        )
    return api_key


def api_key_authenticate(key: str) -> ApiKey:
    """Return the active ApiKey matching `key`, with its customer.

    Raises ApiKeyInvalid when no active key matches. The hash comparison
    takes constant time, so its timing reveals nothing about the stored hash.
    """
    if not key.startswith(KEY_START) or key[PREFIX_LENGTH : PREFIX_LENGTH + 1] != "_":
        raise ApiKeyInvalid("The API key is malformed.")
    api_key = (
        ApiKey.objects.select_related("customer")
        .filter(prefix=key[:PREFIX_LENGTH])
        .first()
    )
    if api_key is None or not hmac.compare_digest(
        api_key.secret_hash, secret_hash(key)
    ):
        raise ApiKeyInvalid("The API key is not valid.")
    if api_key.revoked_at is not None:
        raise ApiKeyInvalid("The API key was revoked.")
    return api_key


def api_key_touch(api_key: ApiKey, *, now: datetime | None = None) -> bool:
    """Set `last_used_at` to now unless it is less than a minute old; return if written."""
    now = now or timezone.now()
    if api_key.last_used_at is not None and (
        now - api_key.last_used_at < LAST_USED_RESOLUTION
    ):
        return False
    # Conditional, so concurrent requests of one key write it once.
    written = (
        ApiKey.objects.filter(pk=api_key.pk)
        .filter(
            Q(last_used_at__isnull=True)
            | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        )
        .update(last_used_at=now)
    )
    api_key.last_used_at = now
    return bool(written)
