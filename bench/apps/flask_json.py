"""A JSON API in Flask: the posted document parsed with ``request.get_json()``, a small JSON
answer."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/")
def api():
    doc = request.get_json()
    return jsonify(id=doc["id"], items=len(doc["items"]), ok=True)
