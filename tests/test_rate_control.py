"""Rate control arithmetic (pure): counts and percentages, rounding, the plan of batches and
windows, the ledger that counts each result once, bad input; and reading an InstanceGroup's
instance ids from GetStackResource's attributes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alicloud_runbooks.rate_control import Ledger, RateControl, allowed_errors, at_least_one
from tasks.instances import group_instance_ids

IDS = [f"i-{n:03d}" for n in range(30)]


def test_percentages_round_up_for_sizes_and_down_for_the_budget() -> None:
    assert at_least_one("20%", 30) == 6
    assert at_least_one("25%", 10) == 3
    assert at_least_one("1%", 30) == 1  # never a batch of 0
    assert at_least_one(7, 30) == 7
    assert allowed_errors("10%", 30) == 3
    assert allowed_errors("15%", 10) == 1  # 1.5 tolerated failures is 1
    assert allowed_errors("2%", 1000) == 20
    assert allowed_errors(0, 30) == 0


def test_the_plan_of_batches_canary_and_windows() -> None:
    plan = RateControl(batch_size="20%", max_errors="10%").plan(IDS)
    assert [b.size for b in plan.batches] == [6] * 5
    assert plan.budget == 3
    assert [b.instance_ids for b in plan.batches][1] == IDS[6:12]
    canary = RateControl(batch_size=10, canary=3, concurrency=4).plan(IDS)
    assert [(b.size, b.width, b.canary) for b in canary.batches] == [
        (3, 3, True),
        (10, 4, False),
        (10, 4, False),
        (7, 4, False),
    ]
    window = RateControl(mode="concurrency", concurrency="10%").plan(IDS)
    assert [(b.size, b.width) for b in window.batches] == [(30, 3)]
    assert RateControl(mode="concurrency").plan(IDS).batches[0].width == 1  # OOS's default
    assert RateControl().plan([]).batches == []


def test_a_result_counts_once_and_the_budget_is_exceeded_past_it() -> None:
    ledger = Ledger(total=5, budget=1)
    assert ledger.count("i-1", ok=False)
    assert not ledger.count("i-1", ok=False)
    assert not ledger.count("i-1", ok=True)  # a later, different answer does not count again
    assert (ledger.done, ledger.exceeded, ledger.budget_left) == (1, False, 0)
    ledger.count("i-2", ok=False)
    assert (ledger.exceeded, ledger.budget_left) == (True, -1)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("batch_size", "10 percent", "is not a count or a percentage"),
        ("max_errors", "150%", "between 0% and 100%"),
        ("max_errors", -1, "cannot be negative"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("concurrency", "0%", "concurrency must be at least 1"),
        ("mode", "rolling", "'batch' or 'concurrency'"),
        ("concurrency_limit", "a/b", "String should match pattern"),
    ],
)
def test_bad_rate_control_says_what_is_wrong(field: str, value: object, says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RateControl.model_validate({field: value})
    assert says in str(raised.value)


def test_counts_and_percentages_arrive_as_text_from_forms() -> None:
    control = RateControl.model_validate({"batch_size": "12", "max_errors": " 5 % "})
    assert (control.batch_size, control.max_errors) == (12, "5%")


def test_an_instance_groups_ids_come_from_its_attributes() -> None:
    assert group_instance_ids([{"Key": "InstanceIds", "Value": ["i-a", "i-b"]}]) == ["i-a", "i-b"]
    assert group_instance_ids(
        [{"Key": "PrivateIps", "Value": "[]"}, {"Key": "InstanceIds", "Value": '["i-c"]'}]
    ) == ["i-c"]
    assert group_instance_ids(None) == []
