"""Packaging for mq_transaction and mq_pyramid."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
#: The version is stated once, in mq_transaction/_version.py (read here without importing
#: the package, whose dependencies may not be installed yet).
VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "mq_transaction/_version.py").read_text(), re.M).group(1)

TESTS_REQUIRE = [
    "pytest",
    "aiosmtpd",
    "WebTest",
    "ruff",
    "mypy",
    "mypy-zope",
    "pyramid_tm",
    "pyramid_retry",
    "zope.sqlalchemy",
    "pyramid_mailer",
    "cryptography",
    "sphinx",
    "myst-parser",
    "build",
    "twine",
]
#: The database queue (mq_transaction.DatabaseQueue): SQLAlchemy Core, psycopg 3, and
#: zope.sqlalchemy for the same-transaction mode (QueuedMailer(queue, session=...)).
POSTGRESQL_REQUIRE = ["SQLAlchemy>=2", "psycopg[binary]>=3", "zope.sqlalchemy"]
BENCH_REQUIRE = ["zope.sendmail", "aiosmtpd"]

setup(
    name="mq_transaction",
    version=VERSION,
    description="A transactional, persistent outgoing mail queue for Python web applications",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mq_transaction", "mq_transaction.*", "mq_pyramid", "mq_pyramid.*"]),
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    install_requires=[
        "transaction>=3",
        "zope.interface",
        "plaster_pastedeploy",
        "PasteDeploy",  # paste.deploy.converters.asbool: booleans read as Pyramid users expect
        "prometheus_client",
        "idna",  # IDNA 2008 A-labels for servers without SMTPUTF8
    ],
    extras_require={
        "pyramid": ["pyramid>=2", "waitress"],
        "postgresql": POSTGRESQL_REQUIRE,
        # psycopg2 too: the same-transaction mode runs on the app's connection, whatever its driver.
        "test": ["pyramid>=2", "waitress", *POSTGRESQL_REQUIRE, "psycopg2-binary", *TESTS_REQUIRE],
        "bench": BENCH_REQUIRE,
    },
    entry_points={
        "console_scripts": [
            "mq-send = mq_transaction.cli_send:main",
            "mq-queue = mq_transaction.cli_queue:main",
        ],
    },
    classifiers=[
        "Framework :: Pyramid",
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Email",
    ],
)
