"""agentconfig.json: a good file loads; every kind of wrong file gets its own clear message."""

import json

from checks import raises
from mcagent import config

IAT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldC1wYXJ0"
CLIENT = "0123456789abcdef0123456789abcdef"


def good(**changes):
    content = {
        "baseUrl": "https://127.0.0.1:8443",
        "iat": IAT,
        "clientCredentialProfile": ["SHARED_SECRET"],
        "clientId": CLIENT,
        "tenant": "acme",
    }
    for k, v in changes.items():
        if v is None:
            content.pop(k, None)
        else:
            content[k] = v
    return {"content": content, "expiration": "2030-01-02T03:04:05.000Z"}


def write(workdir, doc, name="agentconfig.json"):
    path = workdir + "/" + name
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def problems_of(doc):
    e = raises(config.ConfigError, config.parse, doc)
    return e


def test_good_file_loads(workdir):
    cfg = config.load(write(workdir, good()))
    assert cfg.base_url == "https://127.0.0.1:8443"
    assert cfg.client_id == CLIENT and cfg.tenant == "acme" and cfg.iat == IAT
    assert cfg.expiration_ms == 1893553445000
    assert len(cfg.key_id) == 16 and cfg.key_id == config.key_id(IAT)
    assert IAT not in repr(cfg) and CLIENT in repr(cfg)


def test_trailing_slash_and_optional_fields():
    doc = good(baseUrl="https://gw.example.com/", clientCredentialProfile=None)
    del doc["expiration"]
    cfg = config.parse(doc)
    assert cfg.base_url == "https://gw.example.com" and cfg.expiration_ms is None


def test_missing_file_names_the_path(workdir):
    e = raises(config.ConfigError, config.load, workdir + "/nope.json")
    assert "nope.json" in str(e) and "boarding configuration" in str(e)


def test_empty_and_broken_json(workdir):
    e = raises(config.ConfigError, config.load, write(workdir, ""))
    assert "empty" in str(e)
    e = raises(config.ConfigError, config.load, write(workdir, '{"content": {"baseUrl": "ht'))
    assert "not valid JSON" in str(e)
    assert IAT not in str(raises(config.ConfigError, config.load,
                                 write(workdir, '{"content": {"iat": "%s"' % IAT)))


def test_not_a_boarding_configuration():
    assert "JSON object" in str(problems_of([1, 2]))
    assert '"content"' in str(problems_of({"baseUrl": "https://x"}))


def test_each_problem_has_its_own_message():
    e = problems_of({"content": {"baseUrl": "ftp://x", "iat": "notajwt", "clientId": "bad id!",
                                 "tenant": ""}})
    text = str(e)
    assert len(e.problems) == 4, e.problems
    assert "4 problems" in text
    assert "baseUrl" in text and "https" in text
    assert "iat" in text and "JWT" in text and "notajwt" not in text
    assert "clientId" in text
    assert "tenant" in text


def test_missing_fields_are_named():
    for field in ("baseUrl", "iat", "clientId", "tenant"):
        e = problems_of(good(**{field: None}))
        assert len(e.problems) == 1 and field in e.problems[0] and "missing" in e.problems[0], e.problems


def test_base_url_rules():
    for url, words in (
        ("https://gw.example.com/api", "path"),
        ("gw.example.com", "https://"),
        ("https://gw.example.com:0", "port"),
        ("https://gw.example.com:99999", "port"),
        ("https://gw.example.com:abc", "port"),
        ("https://user@gw.example.com", "user"),
        ("https://", "scheme://host"),
    ):
        e = problems_of(good(baseUrl=url))
        assert words in str(e), (url, str(e))
    assert config.split_url("http://[::1]:8080") == ("http", "::1", 8080)
    assert config.split_url("https://gw.example.com") == ("https", "gw.example.com", 443)
    assert config.split_url("http://gw") == ("http", "gw", 80)


def test_only_shared_secret_profile():
    e = problems_of(good(clientCredentialProfile=["RSA_3072"]))
    assert "SHARED_SECRET" in str(e) and "RSA_3072" in str(e)
    assert config.parse(good(clientCredentialProfile="SHARED_SECRET")).client_id == CLIENT


def test_bad_expiration():
    doc = good()
    doc["expiration"] = "next tuesday"
    assert "expiration" in str(problems_of(doc))


def test_key_id_differs_per_key():
    assert config.key_id(IAT) != config.key_id(IAT + "x")
