-- Headless end-to-end test of the plugin against the real server:
--   CTXZIP_BIN=target/debug/ctxzip nvim --headless -u NONE -i NONE -l clients/nvim/test/ctxzip_test.lua
-- Opens a workspace, runs :CtxZip and :CtxZipFunction, checks the scratch buffer and the register.
local plugin = vim.fs.dirname(vim.fs.dirname(vim.fs.abspath(debug.getinfo(1, 'S').source:sub(2))))
vim.opt.rtp:prepend(plugin)
vim.cmd('filetype on')

local bin = assert(os.getenv('CTXZIP_BIN'), 'set CTXZIP_BIN to the ctxzip binary')
local t0 = vim.uv.hrtime()
local function log(msg)
  io.stdout:write(('[%5.1f s] %s\n'):format((vim.uv.hrtime() - t0) / 1e9, msg))
end

local function check(cond, msg)
  if not cond then
    error(msg, 2)
  end
end

local function wait(ms, cond, what)
  if not vim.wait(ms, cond, 50) then
    local logfile = vim.lsp.log.get_filename()
    error(('timed out after %d ms waiting for %s; messages: %s; LSP log %s'):format(ms, what,
      vim.fn.execute('messages'), logfile))
  end
end

-- A workspace: a git root with two Python files.
local ws = vim.fs.normalize(vim.fn.tempname())
vim.fn.mkdir(ws .. '/.git', 'p')
vim.fn.mkdir(ws .. '/src', 'p')
vim.fn.writefile(vim.split([[
import time


def retry_with_backoff(call, attempts=5, base_delay=0.1):
    """Call `call` until it succeeds, sleeping twice as long after each failure."""
    for attempt in range(attempts):
        try:
            return call()
        except ConnectionError:
            time.sleep(base_delay * 2 ** attempt)
    raise ConnectionError("gave up after %d attempts" % attempts)


def open_socket(host, port):
    return retry_with_backoff(lambda: connect(host, port))]], '\n'), ws .. '/src/net.py')
vim.fn.writefile(vim.split([[
class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return 3.14159 * self.radius * self.radius


def parse_color(text):
    """Parse '#rrggbb' into an (r, g, b) tuple."""
    return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))]], '\n'), ws .. '/src/shapes.py')
vim.cmd.cd(ws)

local progress = {}
-- `$/progress` values by token.
local by_token = {}
vim.api.nvim_create_autocmd('LspProgress', {
  callback = function(args)
    local params = args.data.params
    table.insert(progress, params.value)
    by_token[params.token] = by_token[params.token] or {}
    table.insert(by_token[params.token], params.value)
  end,
})

local ctxzip = require('ctxzip')
ctxzip.setup({ cmd = { bin, 'lsp' }, model = 'smollm2-135m', budget = 300, threads = 1, gpu_layers = 0 })
local client = ctxzip.client()
check(client, 'setup started no client')
check(client.config.init_options.gpuLayers == 0, vim.inspect(client.config.init_options))
check(client.root_dir == ws, ('root %s, expected %s'):format(client.root_dir, ws))

-- :CtxZip {query} right after startup (it waits for the server to initialize and index)
-- → scratch markdown buffer + register (no clipboard headless: `"`).
local query_win = vim.api.nvim_get_current_win()
vim.cmd('CtxZip how are failed connections retried?')
wait(60000, function()
  return ctxzip.progress_state and ctxzip.progress_state.kind == 'end'
end, 'indexing to end')
log('indexed: ' .. ctxzip.progress_state.message)
check(progress[1].kind == 'begin', 'first progress event is not begin: ' .. vim.inspect(progress[1]))
check(ctxzip.progress_state.message:match('indexed 2 files'), ctxzip.progress_state.message)
-- The request runs now: the statusline shows its progress, not the finished indexing.
check(ctxzip.statusline() ~= 'ctxzip ✓', ctxzip.statusline())
wait(120000, function()
  return ctxzip.last ~= nil
end, ':CtxZip result (the first request loads the model)')
local last = ctxzip.last
log(':CtxZip → ' .. vim.b[last.bufnr].ctxzip.summary)
check(vim.api.nvim_get_current_buf() == last.bufnr, 'the result buffer is not shown in the current window')
check(vim.api.nvim_get_current_win() ~= query_win, 'the result did not open in a new window')
check(vim.bo[last.bufnr].filetype == 'markdown', 'filetype ' .. vim.bo[last.bufnr].filetype)
check(vim.bo[last.bufnr].buftype == 'nofile', 'not a scratch buffer')
local lines = vim.api.nvim_buf_get_lines(last.bufnr, 0, -1, false)
local text = table.concat(lines, '\n')
check(lines[1]:match('^<!%-%- ctxzip: how are failed connections retried%? | %d+ of %d+ tokens, %d+ chunks? from %d files?, %d+ ms %-%->$'),
  'header: ' .. lines[1])
check(text:find('def retry_with_backoff(', 1, true), text)
check(text:find('src/net.py', 1, true), text)
local names = vim.tbl_map(function(c)
  return c.name
end, last.result.chunks)
check(vim.tbl_contains(names, 'retry_with_backoff'), vim.inspect(names))
-- The request's stages arrived on its own token, in order, the percentage never going back,
-- and ended with what was kept.
local token = last.params.workDoneToken
check(token and token:match('^ctxzip/nvim/%d+$'), vim.inspect(last.params))
wait(10000, function()
  return ctxzip.request_progress.kind == 'end'
end, "the request's progress to end")
local stages = by_token[token] or {}
check(#stages > 0 and stages[1].kind == 'begin' and stages[#stages].kind == 'end', vim.inspect(stages))
local from, high = 1, 0
for _, stage in ipairs({ 'loading the model', 'ranking chunks by keywords', 'assembling the context' }) do
  while from <= #stages and not (stages[from].message or ''):find(stage, 1, true) do
    from = from + 1
  end
  check(from <= #stages, ('stage %q not reported in order: %s'):format(stage, vim.inspect(stages)))
end
for _, v in ipairs(stages) do
  check((v.percentage or high) >= high, 'the percentage went back: ' .. vim.inspect(stages))
  high = v.percentage or high
end
local kept = ('%d tokens from %d chunks'):format(last.result.stats.compressed_tokens, #last.result.chunks)
check(stages[#stages].message == kept, vim.inspect(stages[#stages]) .. ' vs ' .. kept)
check(ctxzip.request_progress.message == kept, vim.inspect(ctxzip.request_progress))
log(('request progress: %d events on %s'):format(#stages, token))
check(ctxzip.statusline() == 'ctxzip ✓', ctxzip.statusline())
local reg = vim.fn.getreg('"')
check(reg == last.text, 'register " holds: ' .. reg)
check(reg:find('def retry_with_backoff(', 1, true) and not reg:find('<!--', 1, true), reg)

-- :CtxZipFunction on Circle.area, with a configured register.
ctxzip.config.register = 'z'
vim.cmd.wincmd('p')
vim.cmd.edit(ws .. '/src/shapes.py')
check(#vim.lsp.get_clients({ bufnr = 0, name = 'ctxzip' }) == 1, 'shapes.py is not attached to the ctxzip client')
check(#vim.lsp.get_clients({ name = 'ctxzip' }) == 1, 'a second server was started for the same root')
vim.api.nvim_win_set_cursor(0, { 6, 8 })
ctxzip.last = nil
vim.cmd('CtxZipFunction')
wait(60000, function()
  return ctxzip.last ~= nil
end, ':CtxZipFunction result')
last = ctxzip.last
log(':CtxZipFunction → ' .. vim.b[last.bufnr].ctxzip.summary)
check(last.query == 'return 3.14159 * self.radius * self.radius', 'query: ' .. last.query)
check(last.params.focus.uri == vim.uri_from_fname(ws .. '/src/shapes.py'), vim.inspect(last.params.focus))
check(vim.deep_equal(last.params.focus.position, { line = 5, character = 8 }), vim.inspect(last.params.focus))
local focus_names = vim.tbl_map(function(c)
  return c.name
end, last.result.chunks)
check(vim.tbl_contains(focus_names, 'area') or vim.tbl_contains(focus_names, 'Circle'), vim.inspect(focus_names))
check(vim.fn.getreg('z'):find('self.radius', 1, true), 'register z: ' .. vim.fn.getreg('z'))

-- A refused request is reported, not thrown, in the plugin's terms (a count, setup{budget}),
-- from the error's code and data rather than its words.
local notified_errors = {}
local notify_errors = vim.notify
vim.notify = function(msg, level)
  if level == vim.log.levels.ERROR then
    table.insert(notified_errors, msg)
  end
end
local function refused(params)
  local err
  notified_errors = {}
  ctxzip.compress(params, function(e)
    err = e or false
  end)
  wait(60000, function()
    return err ~= nil
  end, 'the refused request')
  return err, notified_errors[1]
end
local err, shown = refused({ query = 'anything', budget = -1 })
check(err and err.code == ctxzip.codes.bad_budget, vim.inspect(err))
check(err.data.kind == 'bad_budget' and err.data.budget == -1, vim.inspect(err))
check(shown and shown:find('setup{budget = 2000}', 1, true) and not shown:find('"budget"', 1, true), tostring(shown))
err, shown = refused({ query = 'how are failed connections retried?', budget = 1 })
check(err and err.code == ctxzip.codes.budget_too_small, vim.inspect(err))
local smallest = err.data.smallest
check(err.data.kind == 'budget_too_small' and err.data.budget == 1 and smallest > 1, vim.inspect(err))
check(shown and shown:find((':%dCtxZip how are failed connections retried?'):format(smallest), 1, true)
  and shown:find(('setup{budget = %d}'):format(smallest), 1, true), tostring(shown))
log('refused → ' .. shown)
local missing = vim.fn.tempname() .. '/tokenizer.json'
err, shown = refused({ query = 'retries', tokenizer = missing })
check(err and err.code == ctxzip.codes.tokenizer_file, vim.inspect(err))
check(err.data.kind == 'tokenizer_file' and err.data.path == missing and err.data.problem == 'not_found', vim.inspect(err))
check(shown == ('ctxzip: the tokenizer file %s does not exist: set setup{init_options = {tokenizer = ...}} to model, o200k, '
  .. 'cl100k or the absolute path of a tokenizer.json'):format(missing), tostring(shown))
vim.notify = notify_errors
-- "Still indexing" is the code, whatever the words.
check(ctxzip.still_indexing({ code = ctxzip.codes.index_not_ready, message = 'anything' }), 'index_not_ready code')
check(not ctxzip.still_indexing({ code = -32602, message = 'the workspace is still being indexed' }),
  'a message was matched instead of the code')

-- :CtxZipStatus prints readable lines (no vim.inspect dump, no vim.NIL), from the real status.
local notified = {}
local notify = vim.notify
vim.notify = function(msg)
  table.insert(notified, msg)
end
vim.cmd('CtxZipStatus')
wait(10000, function()
  return #notified > 0
end, ':CtxZipStatus')
vim.notify = notify
local status_text = notified[1]
log(':CtxZipStatus → ' .. status_text)
check(status_text:match('^ctxzip: ready; 2 files, %d+ chunks indexed'), status_text)
check(status_text:find('\nmodel: smollm2%-135m %(loaded%)'), status_text)
check(status_text:find('\ncache: %d+ tokens decoded'), status_text)
check(not status_text:find('NIL', 1, true) and not status_text:find('{', 1, true), status_text)
-- A fresh server's cache has no hits or misses: its rates are null.
local fresh = ctxzip.status_lines(vim.json.decode(
  '{"files": 0, "chunks": 0, "indexing": {"state": "ready"}, "model": {"name": "m", "loaded": false, "path": null},'
    .. ' "cache": {"tokensDecoded": 0, "diskHitRate": null, "kvStateHitRate": null}}'))
check(fresh[2] == 'model: m (not loaded yet: the first request loads it)', vim.inspect(fresh))
check(fresh[3]:find('hit rate none yet', 1, true), vim.inspect(fresh))

-- :checkhealth runs without errors.
vim.cmd('checkhealth ctxzip')
local health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
check(health:find('2 files', 1, true) and not health:find('ERROR', 1, true), health)

client:stop()
wait(5000, function()
  return client:is_stopped()
end, 'the server to stop')
vim.fn.delete(ws, 'rf')
log('ok')
