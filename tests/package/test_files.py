"""
What the installed package put on the system: the unit, the conffile, the API key file, the
service user and its directories, the twistd plugin, and its dependencies from Debian.
"""

import grp
import hashlib
import os
import pwd
import stat
import subprocess

from tests.package.installed import CONFFILE, KEYS, REPO, UNIT, UnitProcess
from vncproxy.web.auth import load_keys

EXEC_START = ("/usr/bin/twistd3 --nodaemon --pidfile= --logger=vncproxy.journal.observer consoleproxy "
              "--config /etc/consoleproxy/consoleproxy.conf")


def dpkg_query(field):
    return subprocess.run(["dpkg-query", "-W", "-f", "${" + field + "}", "consoleproxy"],
                          check=True, capture_output=True, text=True).stdout


def package_files():
    out = subprocess.run(["dpkg", "-L", "consoleproxy"], check=True, capture_output=True,
                         text=True).stdout
    return out.splitlines()


def test_systemd_analyze_verify_accepts_the_unit():
    """systemd-analyze verify exits 0 and has nothing to say about the installed unit."""
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                            text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_unit_runs_twistd_as_the_service_user_hardened(unit):
    """ExecStart is twistd in the foreground; user, restart policy and hardening are set."""
    service = unit["Service"]
    assert service["ExecStart"] == [EXEC_START]
    assert service["User"] == ["consoleproxy"] and service["Group"] == ["consoleproxy"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": "",
                       "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                       "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
                       "StateDirectory": "consoleproxy", "StateDirectoryMode": "0750",
                       "UMask": "0027"}.items():
        assert service.get(key) == [value], key
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "LogsDirectory" not in service  # the journal is the log


def test_conffile_is_the_documented_example_with_the_key_file():
    """consoleproxy.conf is a conffile: etc/consoleproxy.conf, keys_file set to the installed key file."""
    conffiles = dpkg_query("Conffiles")
    assert f" {CONFFILE} " in conffiles
    expected = (REPO / "etc" / "consoleproxy.conf").read_text().replace(
        "\nkeys_file =\n", f"\nkeys_file = {KEYS}\n")
    assert CONFFILE.read_text() == expected
    md5 = hashlib.md5(CONFFILE.read_bytes()).hexdigest()
    assert f" {CONFFILE} {md5}" in conffiles  # unmodified since installation


def test_api_key_file_is_random_and_readable_by_the_service_only():
    """The API key file: root:consoleproxy 0640, one random key the service accepts."""
    st = os.stat(KEYS)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == 0 and st.st_gid == grp.getgrnam("consoleproxy").gr_gid
    keys = load_keys(str(KEYS))
    assert len(keys) == 1 and len(keys[0]) >= 40
    assert str(KEYS) not in package_files()  # made at install, not shipped


def test_service_user_is_a_system_user_in_group_libvirt():
    """consoleproxy: a system user with no login shell, its own group, member of libvirt."""
    user = pwd.getpwnam("consoleproxy")
    assert user.pw_uid < 1000
    assert user.pw_shell == "/usr/sbin/nologin"
    assert user.pw_dir == "/var/lib/consoleproxy"
    assert grp.getgrgid(user.pw_gid).gr_name == "consoleproxy"
    assert "consoleproxy" in grp.getgrnam("libvirt").gr_mem


def test_state_directory_is_private_to_the_service_and_there_is_no_log_directory():
    """/var/lib/consoleproxy: consoleproxy:consoleproxy 0750; no /var/log/consoleproxy (the
    journal is the log)."""
    user = pwd.getpwnam("consoleproxy")
    st = os.stat("/var/lib/consoleproxy")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, user.pw_uid, user.pw_gid)
    assert not os.path.exists("/var/log/consoleproxy")


def test_twistd_finds_the_plugin_as_the_service_user(unit):
    """The plugin sits in Twisted's plugins directory, no dropin.cache is shipped, twistd3 lists it."""
    files = package_files()
    assert "/usr/lib/python3/dist-packages/twisted/plugins/consoleproxy.py" in files
    assert not [f for f in files if f.endswith("dropin.cache")]
    proc = UnitProcess(unit, "/dev/null")
    cmd = proc.command()
    cmd = cmd[:cmd.index("--") + 1] + ["/usr/bin/twistd3", "--help"]
    out = subprocess.run(cmd, env=proc.environment(), cwd="/", capture_output=True, text=True,
                         check=True).stdout
    assert "consoleproxy" in out
    cache = "/usr/lib/python3/dist-packages/twisted/plugins/dropin.cache"
    with open(cache, "rb") as f:  # rebuilt by python3-twisted's trigger
        assert b"consoleproxy" in f.read()


def test_code_and_dependencies_come_from_debian_packages():
    """Debian's python3 imports vncproxy and every dependency from /usr/lib/python3/dist-packages."""
    probe = ("import autobahn, cryptography, libvirt, OpenSSL, prometheus_client, "
             "service_identity, twisted, vncproxy, zope.interface\n"
             "for m in (autobahn, cryptography, libvirt, OpenSSL, prometheus_client, "
             "service_identity, twisted, vncproxy, zope.interface):\n"
             "    print(m.__name__, m.__file__)\n")
    out = subprocess.run(["/usr/bin/python3", "-c", probe], cwd="/", env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        name, path = line.split(" ", 1)
        assert path.startswith("/usr/lib/python3/dist-packages/"), line
    depends = dpkg_query("Depends")
    for package in ("python3-twisted (>= 22.4)", "python3-autobahn (>= 22.7)",
                    "python3-openssl (>= 23.0)", "python3-service-identity (>= 18.1)",
                    "python3-libvirt (>= 9.0)", "python3-zope.interface", "adduser"):
        assert package in depends
    # noVNC's full UI only: the package ships the library /vnc_lite.html needs
    assert "novnc" not in depends and "novnc" in dpkg_query("Recommends")
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "python3-twisted"],
                             check=True, capture_output=True, text=True).stdout
    assert version.startswith("22.4.")  # Debian 12's own, not a newer one from elsewhere


def test_polkit_rule_for_least_privilege_is_installed_unchanged():
    """The least-privilege polkit rule is in polkit's vendor rules directory, as in the
    repository (tests/e2e/test_least_privilege_e2e.py tests that file against libvirtd)."""
    installed = "/usr/share/polkit-1/rules.d/60-consoleproxy-libvirt.rules"
    assert installed in package_files()
    with open(installed, "rb") as f, open(
            REPO / "etc" / "polkit-1" / "rules.d" / "60-consoleproxy-libvirt.rules", "rb") as g:
        assert f.read() == g.read()
    assert stat.S_IMODE(os.stat(installed).st_mode) == 0o644
