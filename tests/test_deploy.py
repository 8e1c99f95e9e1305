"""deploy/ is validated offline: every manifest parses, the nightly CronJob never overlaps,
the DaskJob carries the runner + cluster the operator needs, workers recycle themselves, and
no credentials are committed; core kinds pass kubernetes-validate (strict, Kubernetes 1.32) and
the DaskJobs a schema of the operator's required fields."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).parents[1] / "deploy"


def docs(name):
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_every_yaml_parses_and_names_its_kind():
    for f in sorted(DEPLOY.rglob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            assert d, f
            if "k8s" in f.parts and f.name != "kustomization.yaml":
                assert d["apiVersion"] and d["kind"] and d["metadata"]["namespace"] == "maskjob"


def test_nightly_cronjob_forbids_overlap_and_submits_an_incremental_daskjob():
    [cron] = docs("k8s/cronjob.yaml")
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "maskjob"
    [cm] = docs("k8s/configmap.yaml")
    nightly = yaml.safe_load(cm["data"]["nightly-daskjob.yaml"])
    assert nightly["kind"] == "DaskJob"
    assert "--incremental" in nightly["spec"]["job"]["spec"]["containers"][0]["args"]
    assert yaml.safe_load(cm["data"]["job.yaml"])["formats"] == ["supervisely"]


def test_daskjob_has_runner_scheduler_and_recycling_workers():
    [job] = docs("k8s/daskjob.yaml")
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    runner = job["spec"]["job"]["spec"]["containers"][0]
    assert runner["args"][:2] == ["maskjob", "export"]
    cluster = job["spec"]["cluster"]["spec"]
    worker = cluster["worker"]["spec"]["containers"][0]
    assert {"--lifetime", "--lifetime-stagger", "--lifetime-restart"} <= set(worker["args"])
    assert isinstance(cluster["worker"]["replicas"], int)
    sched = cluster["scheduler"]["spec"]["containers"][0]
    assert sched["readinessProbe"]["httpGet"]["path"] == "/health"
    images = {runner["image"], worker["image"], sched["image"]}
    assert len(images) == 1, "driver, scheduler and workers must run one image"


def test_rbac_lets_the_cronjob_create_daskjobs_only_in_its_namespace():
    role, binding = docs("k8s/role.yaml")
    assert role["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    rule = next(r for r in role["rules"] if "daskjobs" in r["resources"])
    assert "create" in rule["verbs"]


def test_no_real_credentials_are_committed():
    [secret] = docs("k8s/secret-example.yaml")
    assert set(secret["stringData"].values()) == {"replace-me"}


def test_kustomization_resources_exist():
    kz = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    for r in kz["resources"]:
        assert (DEPLOY / "k8s" / r).exists(), r


KUBE_VALIDATE = (shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
                 or shutil.which("kubernetes-validate"))


@pytest.mark.skipif(KUBE_VALIDATE is None, reason="kubernetes-validate not installed")
def test_core_kinds_pass_kubernetes_validate_strict():
    files = [str(DEPLOY / "k8s" / f) for f in ("serviceaccount.yaml", "role.yaml",
                                               "configmap.yaml", "cronjob.yaml",
                                               "secret-example.yaml")]
    r = subprocess.run([KUBE_VALIDATE, "--strict", "-k", "1.32.0", *files],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_daskjobs_match_the_operator_schema():
    """Both DaskJobs (one-off, and the nightly one in the ConfigMap) against a JSON schema of
    the fields the operator requires; a wrong type is caught."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent / "data/daskjob.schema.json").read_text())
    [one_off] = docs("k8s/daskjob.yaml")
    [cm] = docs("k8s/configmap.yaml")
    nightly = yaml.safe_load(cm["data"]["nightly-daskjob.yaml"])
    for job in (one_off, nightly):
        jsonschema.validate(job, schema)
    one_off["spec"]["cluster"]["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(one_off, schema)
