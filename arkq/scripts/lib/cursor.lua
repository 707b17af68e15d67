-- The pick cursor (`ark:pickedto:<queue>`): the last job a pick looked at, "score\nid"; an empty ID
-- stands before every job of that score. Read and written by pick.lua and enqueue.lua, which this goes
-- before (`Script(..., libs=["cursor"])`).
local function cursor_parts(cursor)
  return string.match(cursor, '^([^\n]*)\n(.*)$')
end

local function cursor_of(score, id)
  return score .. '\n' .. id
end

-- Job IDs compared byte by byte, as a sorted set orders members of equal score (Lua's own `<` follows
-- the server's locale).
local function bytes_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
