"""Template errors with ROS's codes (its API pages list Heat's exception names, from which
ROS grew); `StackValidationFailed` is the catch-all, and names what is wrong and where."""

from __future__ import annotations


class TemplateError(Exception):
    """A template or parameter problem, answered 400 with `code`."""

    def __init__(self, message: str, code: str = "StackValidationFailed") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unsupported(what: str, where: str, supported: str) -> TemplateError:
    return TemplateError(f"{what} at {where} is not supported by alisim (it supports {supported}).")


def missing_parameter(name: str) -> TemplateError:
    return TemplateError(f"The Parameter ({name}) was not provided.", "UserParameterMissing")


def unknown_parameter(name: str) -> TemplateError:
    return TemplateError(
        f"The Parameter ({name}) was not defined in template.", "UnknownUserParameter"
    )


def bad_reference(name: str, where: str) -> TemplateError:
    return TemplateError(
        f'The specified reference "{name}" (in {where}) is incorrect.', "InvalidTemplateReference"
    )


def bad_attribute(resource: str, attribute: str) -> TemplateError:
    return TemplateError(
        f"The Referenced Attribute ({resource} {attribute}) is incorrect.",
        "InvalidTemplateAttribute",
    )
