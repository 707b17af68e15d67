-- Job IDs compared byte by byte, as a sorted set orders members of equal score (Lua's own `<` follows
-- the server's locale). Put before the scripts that use it (`Script(..., libs=["ids"])`).
local function bytes_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
