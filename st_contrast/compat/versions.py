"""Whether the installed transformers and peft can run LoRA adapters, and what to install when they cannot."""

from __future__ import annotations

from importlib import metadata

from packaging.version import Version

__all__ = [
    "KNOWN_PEFT_FLOORS",
    "installed_version",
    "CompatibilityError",
    "adapter_support_problem",
    "require_adapter_support",
    "transformers_min_peft_version",
]

KNOWN_PEFT_FLOORS: dict[str, str] = {
    "5.2.0": "0.18.0",
    "5.17.0": "0.19.1",
    "5.20.0": "0.20.0",
    "5.24.0": "0.22.0",
}
"""transformers release -> the peft floor its adapter integration enforces from that release on (used when the
installed transformers does not expose ``MIN_PEFT_VERSION``)."""


class CompatibilityError(RuntimeError):
    """The installed library versions cannot run the requested feature; the message says what to install."""


def installed_version(package: str) -> Version | None:
    """The installed release of the distribution ``package``, or None when it is not installed."""
    try:
        return Version(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


def transformers_min_peft_version() -> Version | None:
    """The oldest peft the installed transformers' adapter integration accepts (None without transformers)."""
    transformers_version = installed_version("transformers")
    if transformers_version is None:
        return None
    try:
        from transformers.integrations.peft import MIN_PEFT_VERSION

        return Version(MIN_PEFT_VERSION)
    except (ImportError, AttributeError):
        floors = [
            Version(peft) for release, peft in KNOWN_PEFT_FLOORS.items() if Version(release) <= transformers_version
        ]
        return max(floors) if floors else None


def _declared_transformers_range() -> str | None:
    """The transformers requirement st_contrast declares (its install metadata), e.g. ``transformers<5.24,>=5.2``."""
    try:
        requirements = metadata.requires("st-contrast") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name = requirement.split(";")[0].strip()
        if name.lower().startswith("transformers") and not name[len("transformers") :][:1].isalnum():
            return name.replace(" ", "")
    return None


def adapter_support_problem() -> str | None:
    """Why LoRA adapters cannot be added, saved or loaded with the installed transformers and peft, or None.

    Returns:
        A one-line explanation with the command that fixes it, or ``None`` when the pair works.
    """
    peft_version = installed_version("peft")
    transformers_version = installed_version("transformers")
    if peft_version is None:
        return "peft is not installed, and LoRA adapters need it: pip install 'peft>=0.18'."
    floor = transformers_min_peft_version()
    if floor is None or peft_version >= floor:
        return None
    declared = _declared_transformers_range()
    downgrade = f"pip install '{declared}'" if declared else "pip install an older transformers release"
    return (
        f"transformers {transformers_version} needs peft >= {floor} for LoRA adapters, but peft {peft_version} is "
        f"installed (the newest peft release may not meet that floor yet). Fix: pip install -U 'peft>={floor}' when "
        f"that release exists, otherwise {downgrade} (the range st_contrast is tested with)."
    )


def require_adapter_support() -> None:
    """Raise :class:`CompatibilityError` (one line, with the fix) when :func:`adapter_support_problem` finds one."""
    if problem := adapter_support_problem():
        raise CompatibilityError(problem)
