-- POST a small JSON document (about 1 KiB) to apps/flask_json.py.
local items = {}
for i = 1, 20 do
  items[#items + 1] = string.format('{"sku": "item-%04d", "qty": %d, "note": "a few words"}', i, i)
end
wrk.method = "POST"
wrk.body = '{"id": 42, "items": [' .. table.concat(items, ", ") .. ']}'
wrk.headers["Content-Type"] = "application/json"
