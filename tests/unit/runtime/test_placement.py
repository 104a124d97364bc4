"""Standby placement: rendezvous hashing over the group's members, computed alike by every instance."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.runtime.ids import TaskId
from service.runtime.placement import copies_for, standby_holders

TASKS = [TaskId("sessions", p) for p in range(12)]
instances = st.lists(st.sampled_from([f"i{n}" for n in range(8)]), min_size=1, max_size=8, unique=True)


@given(instances, st.integers(0, 4), st.data())
def test_each_task_has_as_many_copies_as_asked_never_on_its_owner(members, replicas, data):
    owners = {task: data.draw(st.sampled_from(members)) for task in TASKS if data.draw(st.booleans())}
    holders = standby_holders(TASKS, members, owners, replicas)
    for task in TASKS if replicas else ():
        owner = owners.get(task)
        assert owner not in holders[task]
        assert len(holders[task]) == min(replicas, len([m for m in members if m != owner]))
        assert len(set(holders[task])) == len(holders[task])


@given(instances, st.integers(1, 3))
def test_every_instance_computes_the_same_placement_whatever_order_it_lists_the_members(members, replicas):
    owners = {task: members[task.partition % len(members)] for task in TASKS}
    forward = standby_holders(TASKS, members, owners, replicas)
    backward = standby_holders(TASKS, list(reversed(members)), owners, replicas)
    assert forward == backward
    # What each instance keeps, asked on its own, adds up to the placement.
    for task in TASKS:
        assert {m for m in members if task in copies_for(m, TASKS, members, owners, replicas)} == set(forward[task])


@given(instances.filter(lambda m: len(m) >= 2), st.integers(1, 2))
def test_a_member_joining_takes_copies_only_for_itself(members, replicas):
    """Rendezvous hashing: a newcomer moves only the copies it now holds; no other copy moves."""
    newcomer, before = members[0], members[1:]
    before_holders = standby_holders(TASKS, before, {}, replicas)
    after_holders = standby_holders(TASKS, members, {}, replicas)
    for task in TASKS:
        gone = set(before_holders[task]) - set(after_holders[task])
        came = set(after_holders[task]) - set(before_holders[task])
        assert came <= {newcomer}
        # Once there are enough members, the newcomer's copy replaces one; before, it adds one.
        assert len(gone) == (len(came) if len(before) >= replicas else 0)


def test_two_replicas_with_one_standby_each_keep_a_copy_of_everything_the_other_runs():
    owners = {task: ("a" if task.partition % 2 else "b") for task in TASKS}
    assert copies_for("a", TASKS, ["a", "b"], owners, 1) == {t for t in TASKS if owners[t] == "b"}
    assert copies_for("b", TASKS, ["a", "b"], owners, 1) == {t for t in TASKS if owners[t] == "a"}
    assert copies_for("a", TASKS, ["a", "b"], owners, 0) == set()
