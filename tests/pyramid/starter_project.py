"""A project shaped like the official Pyramid starter (cookiecutter, ``sqlalchemy`` backend).

The files below follow the cookiecutter's ``myproject`` package and its ``tests/conftest.py``
(the ``dbengine``, ``app``, ``tm``, ``dbsession``, ``testapp`` fixtures: one transaction per
test, begun, doomed and never committed), with two changes that need no network: the
database is created with ``Base.metadata.create_all`` (the starter's own conftest names it
as the alternative to alembic) and views render JSON instead of Jinja2 templates. What a
reader adds to the starter (the include, the view, the test module, the testing.ini line)
is taken from docs/pyramid.md, so the page's code is what runs.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "pyramid.md"

STARTER_FILES = {
    "myproject/__init__.py": '''
from pyramid.config import Configurator


def main(global_config, **settings):
    """This function returns a Pyramid WSGI application."""
    with Configurator(settings=settings) as config:
        config.include(".routes")
        config.include(".models")
        config.include("mq_pyramid")
        config.scan()
    return config.make_wsgi_app()
''',
    "myproject/routes.py": """
def includeme(config):
    config.add_route("home", "/")
    config.add_route("signup", "/signup")
""",
    "myproject/models/meta.py": """
from sqlalchemy.orm import declarative_base
from sqlalchemy.schema import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
Base = declarative_base(metadata=metadata)
""",
    "myproject/models/mymodel.py": """
from sqlalchemy import Column, Index, Integer, Text

from .meta import Base


class MyModel(Base):
    __tablename__ = "models"
    id = Column(Integer, primary_key=True)
    name = Column(Text)
    value = Column(Integer)


Index("my_index", MyModel.name, unique=True, mysql_length=255)
""",
    "myproject/models/__init__.py": """
from sqlalchemy import engine_from_config
from sqlalchemy.orm import configure_mappers, sessionmaker
import zope.sqlalchemy

from .mymodel import MyModel  # noqa: F401

configure_mappers()


def get_engine(settings, prefix="sqlalchemy."):
    return engine_from_config(settings, prefix)


def get_session_factory(engine):
    factory = sessionmaker()
    factory.configure(bind=engine)
    return factory


def get_tm_session(session_factory, transaction_manager, request=None):
    dbsession = session_factory(info={"request": request})
    zope.sqlalchemy.register(dbsession, transaction_manager=transaction_manager)
    return dbsession


def includeme(config):
    settings = config.get_settings()
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    config.include("pyramid_tm")
    config.include("pyramid_retry")
    dbengine = settings.get("dbengine")
    if not dbengine:
        dbengine = get_engine(settings)
    session_factory = get_session_factory(dbengine)
    config.registry["dbsession_factory"] = session_factory

    def dbsession(request):
        dbsession = request.environ.get("app.dbsession")
        if dbsession is None:
            dbsession = get_tm_session(session_factory, request.tm, request=request)
        return dbsession

    config.add_request_method(dbsession, reify=True)
""",
    "myproject/views/__init__.py": "",
    "myproject/views/default.py": """
from pyramid.view import view_config

from .. import models


@view_config(route_name="home", renderer="json")
def my_view(request):
    return {"project": "myproject", "models": request.dbsession.query(models.MyModel).count()}
""",
    "tests/__init__.py": "",
    "tests/conftest.py": """
import os

import pytest
import transaction
import webtest
from pyramid.paster import get_appsettings
from pyramid.scripting import prepare
from pyramid.testing import DummyRequest, testConfig

from myproject import main, models
from myproject.models.meta import Base


def pytest_addoption(parser):
    parser.addoption("--ini", action="store", metavar="INI_FILE")


@pytest.fixture(scope="session")
def ini_file(request):
    return os.path.abspath(request.config.option.ini or "testing.ini")


@pytest.fixture(scope="session")
def app_settings(ini_file):
    return get_appsettings(ini_file)


@pytest.fixture(scope="session")
def dbengine(app_settings, ini_file):
    engine = models.get_engine(app_settings)
    Base.metadata.drop_all(bind=engine)
    Base.metadata.create_all(bind=engine)
    yield engine
    Base.metadata.drop_all(bind=engine)


@pytest.fixture(scope="session")
def app(app_settings, dbengine):
    return main({}, dbengine=dbengine, **app_settings)


@pytest.fixture
def tm():
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    tm.doom()
    yield tm
    tm.abort()


@pytest.fixture
def dbsession(app, tm):
    session_factory = app.registry["dbsession_factory"]
    return models.get_tm_session(session_factory, tm)


@pytest.fixture
def testapp(app, tm, dbsession):
    # override request.dbsession and request.tm with our own
    # externally-controlled values that are shared across requests but aborted
    # at the end
    testapp = webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": "example.com",
            "tm.active": True,
            "tm.manager": tm,
            "app.dbsession": dbsession,
        },
    )
    return testapp


@pytest.fixture
def app_request(app, tm, dbsession):
    with prepare(registry=app.registry) as env:
        request = env["request"]
        request.host = "example.com"
        request.dbsession = dbsession
        request.tm = tm
        yield request


@pytest.fixture
def dummy_request(tm, dbsession):
    request = DummyRequest()
    request.host = "example.com"
    request.tm = tm
    request.dbsession = dbsession
    return request


@pytest.fixture
def dummy_config(dummy_request):
    with testConfig(request=dummy_request) as config:
        yield config
""",
    "pytest.ini": """
[pytest]
testpaths = tests
""",
}

TESTING_INI = """
[app:main]
use = call:myproject:main
sqlalchemy.url = sqlite:///%(here)s/testing.sqlite
retry.attempts = 3
{includes}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)s %(name)s %(message)s
"""


def doc_block(first_line: str) -> str:
    """The fenced code block of docs/pyramid.md whose first line is ``first_line``."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOCS_PAGE.read_text(encoding="utf-8"), re.S):
        if block.splitlines()[0].strip() == first_line:
            return block
    raise AssertionError(f"docs/pyramid.md has no code block starting with {first_line!r}")


def write_project(root: Path, *, testing_includes: bool = True) -> Path:
    """Write the starter-shaped project into ``root``, with the page's view, test and ini lines."""
    files = dict(STARTER_FILES)
    files["myproject/views/signup.py"] = doc_block("# myproject/views/signup.py")
    files["tests/test_signup_mail.py"] = doc_block("# tests/test_signup_mail.py")
    includes = ""
    if testing_includes:
        ini = doc_block("# testing.ini")
        match = re.search(r"^pyramid\.includes =\n(?:[ \t]+\S+\n)+", ini, re.M)
        assert match, "the page's testing.ini block has no pyramid.includes lines"
        includes = match.group(0)
    files["testing.ini"] = TESTING_INI.format(includes=includes)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"), encoding="utf-8")
    return root
