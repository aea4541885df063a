"""No credentials in Ray's logs: a run on S3 leaves its AWS secret in no file of Ray's session folder nor of the
storage root, while its trials still reach S3 with it (on a server that checks every request's signature)."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import pytest
import yaml
from test_storage import _port_open

from conftest import _free_port, wait_for
from srfp.gridspec import resolve_grid_path
from srfp.storage import credentials_out_of_environment


@pytest.fixture
def s3_with_a_key():
    """A loopback S3 server that checks signatures, a user allowed everything, and a bucket of theirs:
    yields (endpoint, access key id, secret access key, bucket)."""
    port = _free_port()
    server = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},  # the user, its key, its policy
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _port_open(port), timeout=30, what="moto_server")
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
                       aws_secret_access_key="bootstrap")
    iam.create_user(UserName="srfp")
    key = iam.create_access_key(UserName="srfp")["AccessKey"]
    iam.put_user_policy(UserName="srfp", PolicyName="everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                 aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket="secret-run")
    yield endpoint, key["AccessKeyId"], key["SecretAccessKey"], "secret-run"
    server.kill()


@pytest.fixture
def ray_temp_dir():
    """A folder for a local Ray's sessions, short enough for its socket paths."""
    folder = tempfile.mkdtemp(prefix="srfp-ray-")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_training_run_on_s3_leaves_its_secret_in_no_ray_log_and_no_stored_file(s3_with_a_key, ray_temp_dir,
                                                                                   tmp_path):
    endpoint, key_id, secret, bucket = s3_with_a_key
    grid = yaml.safe_load(resolve_grid_path("smoke").read_text())
    grid["training"].update(iterations=2, checkpoint_every=2)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(grid))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1",
               AWS_ENDPOINT_URL=endpoint, RAY_TMPDIR=str(ray_temp_dir), SRFP_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-m", "srfp.grid", "train", "--grid", str(tmp_path / "tiny.yaml"),
                             "--root", f"s3://{bucket}/run", "--only", "arch=EDSR,dataset=div2k,loss=L1,scale=2"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                      aws_secret_access_key=secret)
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]
    assert "run/models/EDSR-div2k-x2-L1-s1.safetensors" in keys  # the trial wrote it, signed with the key
    logs = [path for path in ray_temp_dir.rglob("*") if path.is_file() and not path.is_socket()]
    assert any(path.name == "runtime_env_agent.log" for path in logs)
    assert [path for path in logs if secret.encode() in path.read_bytes()] == []
    assert [key for key in keys if secret.encode() in s3.get_object(Bucket=bucket, Key=key)["Body"].read()] == []
    assert secret not in result.stdout + result.stderr


def test_credentials_move_to_a_file_only_the_user_reads_and_come_back(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moved-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moved-secret")
    monkeypatch.delenv("AWS_SHARED_CREDENTIALS_FILE", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with credentials_out_of_environment():
        assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ
        path = Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        credentials = boto3.Session().get_credentials()
        assert (credentials.access_key, credentials.secret_key) == ("moved-key-id", "moved-secret")
    assert not path.exists() and "AWS_SHARED_CREDENTIALS_FILE" not in os.environ
    assert (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) == ("moved-key-id", "moved-secret")


def test_the_credentials_of_a_killed_command_are_deleted_by_the_next_one(monkeypatch):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = Path(tempfile.mkdtemp(prefix=f"srfp-aws-{finished.stdout.strip()}-"))
    running = Path(tempfile.mkdtemp(prefix=f"srfp-aws-{os.getpid()}-"))
    (killed / "credentials").write_text("[default]\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with credentials_out_of_environment():
        pass
    assert not killed.exists() and running.is_dir()
    running.rmdir()
