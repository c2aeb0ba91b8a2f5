"""
Configuration: defaults, validation errors that name file/section/key, documented keys.
"""

import configparser
import pathlib

import pytest

from vncproxy import config

ETC = pathlib.Path(__file__).resolve().parents[2] / "etc" / "consoleproxy.conf"


def test_runs_on_builtin_defaults():
    """With no file, the documented listeners and timeouts (docs/api.md, etc/consoleproxy.conf) apply."""
    c = config.load()
    assert c.api_listen == "tcp:6090:interface=127.0.0.1"
    assert c.console_listen == "tcp:6080"
    assert c.xvpvnc_listen == "tcp:6081"
    assert c.libvirt_uri == "qemu:///system"
    assert c.token_ttl == 180
    assert c.max_vnc_sessions == 2


def test_unknown_key_names_file_section_and_key():
    """A misspelt key is an error naming the file, the section and the key."""
    with pytest.raises(config.ConfigError) as e:
        config.from_string("[tokens]\ntoken_tll = 5\n", "/etc/x.conf")
    assert str(e.value) == "/etc/x.conf: [tokens] token_tll: unknown key"


def test_unknown_section_is_an_error():
    """An unknown section is an error naming it."""
    with pytest.raises(config.ConfigError, match=r"/etc/x.conf: unknown section \[token\]"):
        config.from_string("[token]\nttl = 5\n", "/etc/x.conf")


def test_keys_are_case_sensitive():
    """A key in the wrong case is not silently taken as the right one."""
    with pytest.raises(config.ConfigError, match="Token_TTL: unknown key"):
        config.from_string("[tokens]\nToken_TTL = 5\n", "f")


@pytest.mark.parametrize("text, message", [
    ("[listen]\nconsole = nosuch:80\n", "[listen] console: not a server endpoint string"),
    ("[listen]\napi = tcp:notaport\n", "[listen] api: not a server endpoint string"),
    ("[tokens]\ntoken_ttl = -1\n", "[tokens] token_ttl: must be greater than zero"),
    ("[tokens]\ntoken_ttl = soon\n", "[tokens] token_ttl:"),
    ("[console]\npublic_url = console.example.com\n", "[console] public_url: must be"),
])
def test_bad_values_are_errors(text, message):
    """A value of the wrong form is refused with the section and key named."""
    with pytest.raises(config.ConfigError) as e:
        config.from_string(text, "f.conf")
    assert str(e.value).startswith("f.conf: " + message)


def test_syntax_error_is_a_config_error():
    """A file that is not INI is a ConfigError, not a traceback."""
    with pytest.raises(config.ConfigError, match="f.conf"):
        config.from_string("no section header\n", "f.conf")


def test_missing_file_is_a_config_error(tmp_path):
    """A missing file is reported with its path."""
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "nope.conf"))


def test_overrides_apply_and_are_validated():
    """Command-line overrides replace file values and face the same checks."""
    c = config.from_string("[tokens]\ntoken_ttl = 30\n", "f", [("tokens", "token_ttl", "60")])
    assert c.token_ttl == 60
    with pytest.raises(config.ConfigError, match=r"\[tokens\] nope: unknown key"):
        config.from_string("", "f", [("tokens", "nope", "1")])


def test_example_file_documents_every_key_with_its_default():
    """etc/consoleproxy.conf lists every key of the schema with its default, and loads."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ETC)
    documented = {(s, k): v for s in parser.sections() for k, v in parser.items(s)}
    schema = {key: default for key, (_, _, default) in config.SCHEMA.items()}
    assert documented == schema
    assert config.load(str(ETC)) == config.load()


@pytest.mark.parametrize("text, mode", [
    ("", None),
    ("[vnc]\ntls_ca = /etc/pki/qemu/ca-cert.pem\n", "x509"),
    ("[vnc]\ntls_anonymous = yes\n", "anonymous"),
    ("[vnc]\ntls_anonymous = off\n", None),
])
def test_vnc_tls_mode(text, mode):
    """A CA means certificate-verified VeNCrypt, tls_anonymous anonymous TLS, neither: none."""
    assert config.from_string(text).vnc_tls_mode == mode


@pytest.mark.parametrize("text, message", [
    ("[vnc]\ntls_ca = ca.pem\ntls_cert = c.pem\n", "[vnc] tls_cert and tls_key: set both"),
    ("[vnc]\ntls_ca = ca.pem\ntls_key = k.pem\n", "[vnc] tls_cert and tls_key: set both"),
    ("[vnc]\ntls_cert = c.pem\ntls_key = k.pem\n", "[vnc] tls_cert: needs tls_ca"),
    ("[vnc]\ntls_hostname = vnc.example\n", "[vnc] tls_hostname: needs tls_ca"),
    ("[vnc]\ntls_ca = ca.pem\ntls_anonymous = true\n",
     "[vnc] tls_anonymous: cannot be combined with tls_ca"),
    ("[vnc]\ntls_anonymous = maybe\n", "[vnc] tls_anonymous: must be true or false"),
    ("[xvpvnc]\nnative_wait = 0\n", "[xvpvnc] native_wait: must be greater than zero"),
])
def test_inconsistent_tls_settings_are_errors(text, message):
    """TLS settings that contradict each other are refused at load time, naming the keys."""
    with pytest.raises(config.ConfigError) as e:
        config.from_string(text, "f.conf")
    assert str(e.value).startswith("f.conf: " + message)
