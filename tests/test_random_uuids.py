"""Card and suggestion UUIDs: random version-4 UUIDs, never the same in two gunicorn workers forked from one master."""

from __future__ import annotations

import os
import uuid

from cds_service.cards import RandomUuids

from .conftest import example_request, service_for


def test_each_uuid_is_a_new_version_4_uuid_past_the_batch_size():
    uuids = RandomUuids()
    made = [uuids() for _ in range(3 * RandomUuids.BATCH + 5)]
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(u).version == 4 and uuid.UUID(u).variant == uuid.RFC_4122 for u in made)


def test_a_forked_process_does_not_hand_out_the_uuids_its_parent_will():
    uuids = RandomUuids()
    uuids()  # the parent holds a batch when it forks, as a preloaded master would after a start-up call
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        os.write(write_end, "\n".join(uuids() for _ in range(20)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        in_child = set(pipe.read().split("\n"))
    os.waitpid(child, 0)
    in_parent = {uuids() for _ in range(20)}
    assert len(in_child) == 20
    assert not in_child & in_parent


def test_the_service_cards_carry_distinct_uuids(client):
    body = example_request("dvt-urgent-hot-calf.json", "patient-view")
    cards = client.post(f"/cds-services/{service_for('patient-view')}", json=body).get_json()["cards"]
    ids = [c["uuid"] for c in cards] + [s["uuid"] for c in cards for s in c.get("suggestions", [])]
    assert len(ids) >= 2 and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)
