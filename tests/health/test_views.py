import pytest


def test_healthz_needs_no_database(client):
    """Returns 200 {"status": "ok"} without touching the database."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_ok_when_database_answers(client):
    """Returns 200 when SELECT 1 answers."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
