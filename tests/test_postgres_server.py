"""The PostgreSQL test fixture itself: a real server, a fresh database per test."""

from __future__ import annotations

import sqlalchemy as sa
from postgres_server import INSTALL_HINT


def test_each_test_gets_an_empty_database_of_its_own(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        assert connection.execute(sa.text("select current_database()")).scalar() == sa.make_url(postgres_url).database
        tables = connection.execute(sa.text("select count(*) from pg_tables where schemaname = 'public'")).scalar()
        connection.execute(sa.text("create table marker (id int)"))
    engine.dispose()
    assert tables == 0


def test_the_server_is_postgresql_15_or_later(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.connect() as connection:
        version = connection.execute(sa.text("show server_version_num")).scalar()
    engine.dispose()
    assert int(version) >= 150000


def test_missing_server_binaries_name_the_package_to_install():
    assert "`postgresql` package" in INSTALL_HINT
