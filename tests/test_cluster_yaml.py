"""cluster.yaml passes the checks `ray up` runs before it contacts any cloud.

`ray up` (ray.autoscaler._private.commands._bootstrap_config) loads the file with yaml.safe_load,
calls prepare_config (merges the provider's defaults.yaml; for `type: local` builds the single node
type from head_ip/worker_ips), then validate_config (Ray's ray-schema.json via jsonschema, plus its
cross-field checks). Both are called here exactly so, offline and without credentials; the steps
after them (autodetecting instance resources, creating keys, roles and security groups) need AWS.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def text() -> str:
    return CLUSTER_YAML.read_text()


def as_ray_up_checks_it(config: dict) -> dict:
    """What `ray up` does with the loaded file before the first cloud call."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def block(source: str, name: str) -> tuple[int, int]:
    """Line indexes of the '# >>> name' and '# <<< name' markers."""
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(rf"# >>> {name}\b", line)]
    ends = [i for i, line in enumerate(lines) if re.match(rf"# <<< {name}\b", line)]
    assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], f"markers of the {name} block"
    return starts[0], ends[0]


def on_premise_source() -> str:
    """cluster.yaml as its comment says to switch: the aws block deleted, the on-premise block uncommented."""
    lines = text().splitlines()
    start, end = block(text(), "on-premise")
    body = lines[start + 1:end]
    assert body and all(line.startswith("#") for line in body), "the on-premise block is commented out"
    uncommented = [re.sub(r"^# ?", "", line) for line in body]
    a_start, a_end = block(text(), "aws")
    kept = lines[:a_start] + lines[a_end + 1:start] + uncommented + lines[end + 1:]
    return "\n".join(kept) + "\n"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(text())


def test_aws_config_passes_ray_up_validation(config):
    prepared = as_ray_up_checks_it(config)
    assert prepared["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    workers = {name: t for name, t in types.items() if name != head}
    assert workers, "a worker node type"
    assert types[head]["resources"].get("GPU", 0) == 0, "a CPU head"
    for name, worker in workers.items():
        assert worker["resources"].get("GPU", 0) >= 1, f"{name} advertises GPUs to Ray"
        assert worker["min_workers"] == 0 and 1 <= worker["max_workers"] <= prepared["max_workers"]
        assert worker["node_config"]["InstanceType"].startswith(("g", "p")), "an AWS GPU instance type"
    # prepare_config put the shared setup commands in front of the head's (boto3 for the autoscaler).
    assert prepared["head_setup_commands"][:len(config["setup_commands"])] == config["setup_commands"]


def test_on_premise_block_passes_ray_up_validation():
    config = yaml.safe_load(on_premise_source())
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config, "the local provider builds its own node type"
    prepared = as_ray_up_checks_it(config)
    assert prepared["provider"]["worker_ips"] and prepared["provider"]["head_ip"]
    assert prepared["auth"]["ssh_user"] and prepared["auth"]["ssh_private_key"]
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(config["provider"]["worker_ips"])
    # Everything outside the two blocks (project upload, setup) is shared by both.
    assert prepared["file_mounts"] == yaml.safe_load(text())["file_mounts"]
    assert prepared["setup_commands"] == yaml.safe_load(text())["setup_commands"]


def test_the_validation_rejects_broken_configs(config):
    with pytest.raises(jsonschema.ValidationError, match="bogus_key"):
        as_ray_up_checks_it({**config, "bogus_key": 1})
    no_resources = copy.deepcopy(config)
    del no_resources["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        as_ray_up_checks_it(no_resources)
    with pytest.raises(ValueError, match="head_node_type"):
        as_ray_up_checks_it({**config, "head_node_type": "missing"})
    # Uncommenting the on-premise block without deleting the aws one: `ray up` refuses too.
    both = yaml.safe_load(on_premise_source())
    both["available_node_types"] = config["available_node_types"]
    with pytest.raises(click.ClickException):
        as_ray_up_checks_it(both)


def test_nodes_install_this_project_and_share_storage(config):
    mounts = config["file_mounts"]
    assert mounts.get("~/hpsearch") == ".", "the working tree is uploaded to every node"
    setup = "\n".join(config["setup_commands"])
    assert re.search(r"pip install\b.*-e ~/hpsearch", setup), "setup installs the uploaded project"
    assert re.search(r'"ray\[default,tune\]==\d', setup), "the cluster's Ray is pinned"
    assert "SEARCH_DATA_DIR=/mnt/shared/" in setup
    assert "/mnt/shared" in "\n".join(config["initialization_commands"]), "aws nodes mount the shared folder"


def test_the_file_says_how_to_use_it():
    source = text()
    for usage in ("ray up cluster.yaml", "ray down cluster.yaml", "python -m search.run",
                  "--storage-path /mnt/shared/", "reachable by every node"):
        assert usage in source, usage
