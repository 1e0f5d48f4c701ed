-- Applies a fixture's list of view steps to a tensor, so one PyTorch case can say
-- "transposed, then narrowed" and the spec builds the same non-contiguous input:
--   apply_view(x, {{"t"}, {"narrow", 2, 1, 3}})   (dims and starts 1-based, as graft)
return function(x, steps)
  for _, s in ipairs(steps or {}) do
    if s[1] == "t" then x = x:t()
    elseif s[1] == "transpose" then x = x:transpose(s[2], s[3])
    elseif s[1] == "permute" then x = x:permute(s[2])
    elseif s[1] == "narrow" then x = x:narrow(s[2], s[3], s[4])
    elseif s[1] == "expand" then x = x:expand(s[2])
    else error("unknown view step " .. s[1]) end
  end
  return x
end
