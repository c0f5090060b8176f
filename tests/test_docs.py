"""The OpenAPI 3 document and the offline Swagger UI / ReDoc pages."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from algoroom.rest import _ERROR_DESCRIPTIONS

EXPECTED_OPERATIONS = {
    ("/health", "get"),
    ("/sessions", "post"),
    ("/sessions/{sessionId}", "get"),
    ("/sessions/{sessionId}/code", "put"),
    ("/sessions/{sessionId}/execution-result", "post"),
    ("/sessions/{sessionId}/execute", "post"),
    ("/sessions/{sessionId}", "delete"),
    ("/languages", "get"),
    ("/ready", "get"),
    ("/ws/sessions/{sessionId}", "get"),
    ("/yjs/{sessionId}", "get"),
}


async def test_openapi_is_a_valid_openapi_3_document(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.")
    validate(document)


async def test_openapi_documents_every_operation_body_response_and_error(client):
    document = await (await client.get("/openapi.json")).json()
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert EXPECTED_OPERATIONS <= operations
    for path, method in EXPECTED_OPERATIONS:
        operation = document["paths"][path][method]
        assert "500" in operation["responses"] or path == "/ready", (path, method)
        for status, response in operation["responses"].items():
            if int(status) >= 400 and path != "/ready":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    put = document["paths"]["/sessions/{sessionId}/code"]["put"]
    assert put["requestBody"]["required"] is True
    assert {"400", "404", "413", "422"} <= set(put["responses"])
    assert put["parameters"][0]["name"] == "sessionId"
    schemas = document["components"]["schemas"]
    assert set(schemas["Session"]["properties"]) == {
        "id", "code", "language", "createdAt", "updatedAt", "participants", "revision",
    }
    assert schemas["UpdateCode"]["required"] == ["code"]
    assert schemas["CreateSession"]["properties"]["language"]["enum"] == ["javascript", "python"] or set(
        schemas["CreateSession"]["properties"]["language"]["enum"]
    ) >= {"javascript", "python"}
    assert set(_ERROR_DESCRIPTIONS)  # the descriptions table is not empty


async def test_docs_pages_work_offline(client):
    for page in ("/docs", "/redoc"):
        resp = await client.get(page)
        assert resp.status == 200
        html = await resp.text()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, page
        for asset in assets:
            assert not asset.startswith(("http:", "https:", "//")), asset
            fetched = await client.get("/" + asset)
            assert fetched.status == 200, asset
            assert len(await fetched.read()) > 500
        assert "openapi.json" in html
