-- queue.lua: a double-ended queue.

local M = {}

local DEFAULT_SIZE = 8

--- Creates an empty queue.
-- @return a new queue
function M.new()
  return setmetatable({ first = 1, last = 0, items = {} }, { __index = M })
end

--- Appends a value at the back.
function M:push(value)
  self.last = self.last + 1
  self.items[self.last] = value
end

function M:pop()
  if self.first > self.last then
    return nil
  end
  local value = self.items[self.first]
  self.items[self.first] = nil
  self.first = self.first + 1
  return value
end

local function is_empty(q)
  return q.first > q.last
end

M.is_empty = is_empty

M.size = function(q)
  return q.last - q.first + 1
end

local helpers = {
  describe = function(q)
    return string.format("queue{%d}", M.size(q))
  end,
}

function drain(q, fn)
  while not is_empty(q) do
    fn(M.pop(q))
  end
end

return M
