--- `:checkhealth ctxzip`: Neovim version, the server binary, a running client's status.
local M = {}

function M.check()
  local ctxzip = require('ctxzip')
  vim.health.start('ctxzip')
  if vim.fn.has('nvim-0.11') == 1 then
    vim.health.ok('Neovim ' .. tostring(vim.version()))
  else
    vim.health.error('Neovim 0.11 or newer is needed (vim.lsp.start with attach = false, client:request)')
  end
  local exe = ctxzip.config.cmd[1]
  if vim.fn.executable(exe) == 1 then
    local out = vim.fn.system({ exe, '--version' })
    vim.health.ok(('`%s`: %s'):format(vim.fn.exepath(exe), vim.trim(out)))
  else
    vim.health.error(('`%s` is not executable'):format(exe), { 'install ctxzip, or setup{ cmd = { "/path/to/ctxzip", "lsp" } }' })
  end
  local client = ctxzip.client()
  if not client then
    vim.health.warn('no ctxzip server running for this workspace', { 'call require("ctxzip").setup{} in your config' })
    return
  end
  local reply = client:request_sync('ctxzip/status', nil, 5000, 0)
  if not reply or reply.err then
    vim.health.error('ctxzip/status failed: ' .. vim.inspect(reply and reply.err))
    return
  end
  local s = reply.result
  vim.health.ok(('root %s: %d files, %d chunks, index %s'):format(client.root_dir, s.files, s.chunks, s.indexing.state))
  vim.health.info(('model %s (%s)'):format(s.model.name, s.model.loaded and 'loaded' or 'not loaded yet'))
end

return M
