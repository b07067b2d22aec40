-- wrk script: rotates over prepared session tokens (one per line in $TOKENS).
-- $MODE picks the scenario; $IDENTITY is a store-user identity token for "login".
local mode = os.getenv("MODE") or "get_all"
local identity = os.getenv("IDENTITY") or ""
local tokens = {}
local counter = 0

local path = os.getenv("TOKENS") or ""
if path ~= "" then
  for line in io.lines(path) do
    tokens[#tokens + 1] = line
  end
end

local json = { ["Content-Type"] = "application/json" }

local function cookie(extra)
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return { ["Cookie"] = "vtex_session=" .. token .. (extra or ""), ["Content-Type"] = "application/json" }
end

request = function()
  if mode == "baseline" or mode == "get_all" then
    -- The baseline gets the very request of the GET scenario (it ignores the cookie), so the
    -- load generator does the same work in both and the ratio measures the server alone.
    return wrk.format("GET", "/api/sessions?items=*", cookie())
  elseif mode == "get_items" then
    return wrk.format("GET", "/api/sessions?items=account.id,store.channel,public.k", cookie())
  elseif mode == "patch" then
    local headers = cookie()
    return wrk.format("PATCH", "/api/sessions", headers, '{"public":{"k":{"value":"' .. counter .. '"}}}')
  elseif mode == "login" then
    local headers = cookie("; VtexIdclientAutCookie_demo=" .. identity .. "; _ga=1")
    return wrk.format("PATCH", "/api/sessions", headers, "{}")
  elseif mode == "create" then
    return wrk.format("POST", "/api/sessions", json, '{"public":{"k":{"value":"v"}}}')
  elseif mode == "visit" then
    -- A crawler's page view: no token, nothing to write.
    return wrk.format("GET", "/api/sessions?items=*")
  end
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local failed = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format("RESULT %s %.1f %.3f %.3f %d %d\n", mode, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, failed))
end
