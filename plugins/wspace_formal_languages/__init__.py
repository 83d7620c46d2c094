"""The formal-languages task family: networks that generate a^n b^(n+mb) c^(n+mc) d^(n+md)."""

from wspace_core.hookspecs import hookimpl
from wspace_formal_languages.family import FormalLanguages, FormalLanguagesSettings
from wspace_formal_languages.language import accepts, accepts_counts, in_language

__all__ = ["FormalLanguages", "FormalLanguagesSettings", "accepts", "accepts_counts", "in_language"]


@hookimpl
def register_task_families(register):
    register("formal_languages", FormalLanguages)
