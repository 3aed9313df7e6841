local f = function(x)
  return x
end

local t = {}
t.a = {}
function t.a.b()
end
