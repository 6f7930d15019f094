"""Kubernetes name and label syntax (apimachinery's validation rules, restated)."""

from __future__ import annotations

import re

_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

LABEL_VALUE_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253


def label_value_problems(value: str) -> list[str]:
    problems = []
    if len(value) > LABEL_VALUE_MAX:
        problems.append(f"must be no more than {LABEL_VALUE_MAX} characters")
    if not _LABEL_VALUE.fullmatch(value):
        problems.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return problems


def label_key_problems(key: str) -> list[str]:
    problems = []
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        problems.append("prefix part must be non-empty")
    if prefix:
        if len(prefix) > DNS1123_SUBDOMAIN_MAX:
            problems.append(f"prefix part must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
        if not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            problems.append("prefix part must be a lowercase RFC 1123 subdomain")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > LABEL_VALUE_MAX:
        problems.append(f"name part must be no more than {LABEL_VALUE_MAX} characters")
    elif not _QUALIFIED_NAME.fullmatch(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return problems


def is_qualified_name(key: str) -> bool:
    return not label_key_problems(key)


def is_dns1123_label(value: str) -> bool:
    return len(value) <= LABEL_VALUE_MAX and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1035_label(value: str) -> bool:
    return len(value) <= LABEL_VALUE_MAX and bool(_DNS1035_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= DNS1123_SUBDOMAIN_MAX and bool(_DNS1123_SUBDOMAIN.fullmatch(value))
