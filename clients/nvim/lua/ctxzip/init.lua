--- ctxzip for Neovim: starts `ctxzip lsp` for the workspace with vim.lsp.start, and asks it
--- for the part of the codebase relevant to a query (`:CtxZip`) or to the function under the
--- cursor (`:CtxZipFunction`). The server does all the work; this file is editor glue.
local M = {}

--- @class ctxzip.Config
local defaults = {
  --- The server command.
  cmd = { 'ctxzip', 'lsp' },
  --- Token budget of a request (nil: the server's default, 2000).
  budget = nil,
  --- Model catalog name or GGUF path (nil: ctxzip's default).
  model = nil,
  --- CPU threads for the model (nil: the server's default, cores - 1).
  threads = nil,
  --- Layers of the model offloaded to a GPU (GPU builds of ctxzip; nil: `gpu_layers` in
  --- ctxzip's config.toml, else 0).
  gpu_layers = nil,
  --- Score on a server instead of in process: the OpenAI-compatible API base of vLLM or
  --- llama-cpp-python serving the same model, e.g. 'http://gpu-box:8000/v1' (nil: locally).
  --- The API key comes from CTXZIP_SCORER_API_KEY in the server's environment.
  scorer_url = nil,
  --- The served model's name, as the scoring server's /v1/models lists it.
  scorer_model = nil,
  --- Requests to the scoring server in flight at once (nil: the server's default, 16).
  scorer_max_in_flight = nil,
  --- Seconds one request to the scoring server may take (nil: the server's default, 60).
  scorer_timeout_s = nil,
  --- Any other initializationOptions (candidates, deadlineMs, maxModelTokens, tokenizer, ignore, maxFileBytes, offline, redact).
  init_options = {},
  --- Files or directories whose presence marks the workspace root.
  root_markers = { '.git', '.hg', '.jj', '.ctxzipignore' },
  --- text, markdown, json or xml.
  format = 'markdown',
  --- Register the result is yanked to (nil: `+` when a clipboard is available, else `"`).
  register = nil,
  --- How the result buffer is opened: a command run before showing it.
  open = 'botright split',
  --- Key for :CtxZipFunction in normal and visual mode (nil: no mapping; `<Plug>(ctxzip-function)` always exists).
  function_key = nil,
  --- Show indexing progress and the stages of a running request in the message area.
  progress = true,
}

M.config = vim.deepcopy(defaults)

--- A JSON value as Lua sees it: `null` decodes to vim.NIL, which is not nil.
local function value(v)
  if v == vim.NIL then
    return nil
  end
  return v
end

--- The last result shown: { query, params, result, bufnr, text }.
M.last = nil

--- Indexing state from the server's `$/progress`: { kind, title, message, percentage }.
M.progress_state = nil

--- The stages of the last request, from `$/progress` on its own `workDoneToken`:
--- { token, kind, message, percentage } (kind `end` once it is answered).
M.request_progress = nil

--- Requests sent so far: each gets its own progress token.
local requests = 0

local function init_options()
  local c = M.config
  local opts = vim.deepcopy(c.init_options or {})
  opts.model = opts.model or c.model
  opts.budget = opts.budget or c.budget
  opts.threads = opts.threads or c.threads
  opts.gpuLayers = opts.gpuLayers or c.gpu_layers
  opts.scorerUrl = opts.scorerUrl or c.scorer_url
  opts.scorerModel = opts.scorerModel or c.scorer_model
  opts.scorerMaxInFlight = opts.scorerMaxInFlight or c.scorer_max_in_flight
  opts.scorerTimeoutS = opts.scorerTimeoutS or c.scorer_timeout_s
  return opts
end

--- Client ids by root directory: vim.lsp.get_clients() leaves out clients that are still
--- initializing, and a request may come before the initialize answer.
local client_ids = {}

local function root_dir(bufnr)
  local name = bufnr and vim.api.nvim_buf_get_name(bufnr) or ''
  local source = name ~= '' and vim.fs.dirname(name) or vim.fn.getcwd()
  return vim.fs.root(source, M.config.root_markers) or vim.fn.getcwd()
end

local function is_file_buffer(bufnr)
  return vim.bo[bufnr].buftype == '' and vim.api.nvim_buf_get_name(bufnr) ~= ''
end

--- Starts (or reuses) the server for `bufnr`'s workspace and attaches the buffer when it is a
--- file. Returns the client id, nil when the server could not start.
function M.start(bufnr)
  if not bufnr or bufnr == 0 then
    bufnr = vim.api.nvim_get_current_buf()
  end
  local attach = is_file_buffer(bufnr)
  local root = root_dir(attach and bufnr or nil)
  local id = vim.lsp.start({
    name = 'ctxzip',
    cmd = M.config.cmd,
    root_dir = root,
    init_options = init_options(),
  }, { bufnr = bufnr, attach = attach })
  if id then
    client_ids[root] = id
  end
  return id
end

--- The ctxzip client for the current buffer's workspace (any ctxzip client as a fallback).
function M.client()
  local root = root_dir(is_file_buffer(0) and 0 or nil)
  local fallback
  for dir, id in pairs(client_ids) do
    local client = vim.lsp.get_client_by_id(id)
    if not client or client:is_stopped() then
      client_ids[dir] = nil
    elseif dir == root then
      return client
    else
      fallback = fallback or client
    end
  end
  return fallback
end

local function register()
  if M.config.register then
    return M.config.register
  end
  return vim.fn.has('clipboard') == 1 and '+' or '"'
end

--- "412 of 9,876 tokens, 7 chunks from 3 files, 120 ms".
function M.summary(result)
  local stats = result.stats or {}
  local files = {}
  for _, chunk in ipairs(result.chunks or {}) do
    files[chunk.path] = true
  end
  local parts = {}
  if stats.compressed_tokens then
    table.insert(parts, ('%d of %d tokens'):format(stats.compressed_tokens, stats.original_tokens or 0))
  end
  local n_chunks = #(result.chunks or {})
  table.insert(parts, ('%d chunk%s from %d file%s'):format(n_chunks, n_chunks == 1 and '' or 's',
    vim.tbl_count(files), vim.tbl_count(files) == 1 and '' or 's'))
  if stats.elapsed_ms then
    table.insert(parts, ('%d ms'):format(math.floor(stats.elapsed_ms + 0.5)))
  end
  if result.partial then
    table.insert(parts, 'partial index (still indexing)')
  end
  return table.concat(parts, ', ')
end

local function show(query, params, result)
  local text = (result.context or ''):gsub('%s+$', '')
  local header = ('<!-- ctxzip: %s | %s -->'):format(query:gsub('%s+', ' '), M.summary(result))
  local lines = vim.split(header .. '\n\n' .. text, '\n', { plain = true })
  local bufnr = vim.api.nvim_create_buf(false, true)
  vim.bo[bufnr].bufhidden = 'wipe'
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, lines)
  vim.bo[bufnr].modifiable = false
  vim.bo[bufnr].filetype = params.format == 'markdown' and 'markdown' or 'text'
  vim.b[bufnr].ctxzip = { query = query, summary = M.summary(result) }
  vim.cmd(M.config.open)
  vim.api.nvim_win_set_buf(0, bufnr)
  local reg = register()
  vim.fn.setreg(reg, text .. '\n')
  M.last = { query = query, params = params, result = result, bufnr = bufnr, text = text .. '\n' }
  vim.notify(('ctxzip: %s (yanked to register %s)'):format(M.summary(result), reg), vim.log.levels.INFO)
  vim.api.nvim_exec_autocmds('User', { pattern = 'CtxZipResult', modeline = false })
end

--- The server's codes for a refused `ctxzip/compress` (lsp/README.md); `err.data` holds the
--- kind and its fields. The plugin switches on these, never on the message's words.
M.codes = {
  index_not_ready = -32050,
  empty_query = -32051,
  bad_budget = -32052,
  bad_rate = -32053,
  budget_and_rate = -32054,
  budget_too_small = -32055,
  empty_workspace = -32056,
  path_outside_root = -32057,
  tokenizer_file = -32058,
}

--- Whether `err` is the server's "nothing indexed yet" refusal, worth retrying shortly.
function M.still_indexing(err)
  return type(err) == 'table' and err.code == M.codes.index_not_ready
end

--- A refused request in this plugin's terms: a budget here is a count (`:500CtxZip`) or
--- `setup{budget = ...}`, not the server's request key.
function M.error_message(err, query)
  if type(err) ~= 'table' then
    return tostring(err)
  end
  local data = type(err.data) == 'table' and err.data or {}
  query = query and query:gsub('%s+', ' ') or '{query}'
  if err.code == M.codes.budget_too_small and value(data.smallest) then
    return ('a budget of %d tokens is smaller than any chunk (the smallest needs %d with its file header): '
      .. 'give a count of at least %d, e.g. :%dCtxZip %s, or setup{budget = %d}')
      :format(data.budget, data.smallest, data.smallest, data.smallest, query, data.smallest)
  elseif err.code == M.codes.bad_budget then
    return ('a budget is a positive number of tokens (got %s): give a count, e.g. :2000CtxZip %s, '
      .. 'or setup{budget = 2000}'):format(tostring(value(data.budget)), query)
  elseif err.code == M.codes.empty_query then
    return 'the query is empty: say what the context is for, e.g. :CtxZip where are retries handled?'
  elseif err.code == M.codes.tokenizer_file and value(data.path) then
    local problem = ({ invalid = 'is not a Hugging Face tokenizer.json', unreadable = 'cannot be read' })[data.problem]
      or 'does not exist'
    return ('the tokenizer file %s %s: set setup{init_options = {tokenizer = ...}} to model, o200k, cl100k '
      .. 'or the absolute path of a tokenizer.json'):format(data.path, problem)
  end
  return err.message or vim.inspect(err)
end

--- Sends `params` as `ctxzip/compress` and shows the result; `on_done(err, result)` is called after.
function M.compress(params, on_done)
  local client = M.client()
  if not client then
    local id = M.start(0)
    client = id and vim.lsp.get_client_by_id(id)
  end
  if not client then
    vim.notify('ctxzip: the server did not start (is `' .. M.config.cmd[1] .. '` on PATH? see :checkhealth ctxzip)',
      vim.log.levels.ERROR)
    return
  end
  params.format = params.format or M.config.format
  params.budget = params.budget or M.config.budget
  -- The server reports this request's stages on its token (`$/progress`, so LspProgress and
  -- vim.lsp.status() see them): model load, keyword ranking, model scoring with done/total
  -- and the time left, pruning, assembly.
  requests = requests + 1
  params.workDoneToken = ('ctxzip/nvim/%d'):format(requests)
  M.request_progress = { token = params.workDoneToken, kind = 'begin' }
  -- A request sent before the initialize answer would be refused; wait for it (30 s at most),
  -- and for the first indexed files (2 minutes at most).
  local waited_ms = 0
  local function send()
    if not client.initialized then
      if client:is_stopped() or waited_ms > 30000 then
        vim.notify('ctxzip: the server did not initialize (see :LspLog)', vim.log.levels.ERROR)
        return
      end
      waited_ms = waited_ms + 50
      return vim.defer_fn(send, 50)
    end
    client:request('ctxzip/compress', params, function(err, result)
      -- The server refuses a request while nothing at all is indexed yet (InvalidParams with
      -- this message); a request right after startup waits for the first files instead.
      if err and M.still_indexing(err) and waited_ms < 120000 then
        waited_ms = waited_ms + 250
        return vim.defer_fn(send, 250)
      end
      if err then
        vim.notify('ctxzip: ' .. M.error_message(err, params.query), vim.log.levels.ERROR)
      else
        show(params.query, params, result)
      end
      if on_done then
        on_done(err, result)
      end
    end, 0)
  end
  send()
end

--- `:CtxZip {query}`; a count is the budget (`:500CtxZip ...`).
function M.query(query, budget)
  query = vim.trim(query or '')
  if query == '' then
    vim.notify('ctxzip: usage :CtxZip {query}', vim.log.levels.WARN)
    return
  end
  M.compress({ query = query, budget = budget })
end

--- `:CtxZipFunction [query]`: the cursor is the focus (its chunk is always kept, its file
--- favoured); the query is the argument, else the selected lines, else the cursor's line.
function M.function_context(query, budget, line1, line2)
  local client = M.client() or (M.start(0) and M.client())
  if not client then
    return
  end
  if not query or vim.trim(query) == '' then
    local first, last = line1 or vim.fn.line('.'), line2 or vim.fn.line('.')
    query = table.concat(vim.api.nvim_buf_get_lines(0, first - 1, last, false), '\n')
  end
  query = vim.trim(query)
  if query == '' then
    query = 'the code at the cursor and what it depends on'
  end
  local pos = vim.lsp.util.make_position_params(0, client.offset_encoding)
  M.compress({
    query = query,
    budget = budget,
    focus = { uri = pos.textDocument.uri, position = pos.position },
  })
end

--- For a statusline: "ctxzip 40%", "ctxzip ✓" or "".
function M.statusline()
  local r = M.request_progress
  local p = (r and r.kind ~= 'end') and r or M.progress_state
  if not p then
    return ''
  end
  if p.kind == 'end' then
    return 'ctxzip ✓'
  end
  return p.percentage and ('ctxzip %d%%%%'):format(p.percentage) or 'ctxzip …'
end

local function percent(rate)
  rate = value(rate)
  return rate and ('%d%%'):format(math.floor(rate * 100 + 0.5)) or 'none yet'
end

--- `ctxzip/status` as lines a person reads (:CtxZipStatus).
function M.status_lines(status)
  local indexing = value(status.indexing) or {}
  local state = value(indexing.state) or '?'
  if state == 'indexing' then
    state = ('indexing %d/%d files'):format(value(indexing.doneFiles) or 0, value(indexing.totalFiles) or 0)
  end
  local lines = {
    ('ctxzip: %s; %d files, %d chunks indexed, %d open buffers%s'):format(state, value(status.files) or 0,
      value(status.chunks) or 0, value(status.openBuffers) or 0, value(status.refining) and '; refining the last answer' or ''),
  }
  for _, root in ipairs(value(status.roots) or {}) do
    table.insert(lines, 'root: ' .. root)
  end
  local model = value(status.model) or {}
  local where = value(model.path) and (' from ' .. model.path) or ''
  table.insert(lines, ('model: %s (%s)%s'):format(value(model.name) or '?',
    value(model.loaded) and 'loaded' or 'not loaded yet: the first request loads it', where))
  local cache = value(status.cache)
  if cache then
    table.insert(lines, ('cache: %d tokens decoded; KV states %d hits, %d misses (hit rate %s); disk %d hits, %d misses (hit rate %s)')
      :format(value(cache.tokensDecoded) or 0, value(cache.kvStateHits) or 0, value(cache.kvStateMisses) or 0,
        percent(cache.kvStateHitRate), value(cache.diskHits) or 0, value(cache.diskMisses) or 0,
        percent(cache.diskHitRate)))
  end
  return lines
end

local function on_progress(args)
  local client = vim.lsp.get_client_by_id(args.data.client_id)
  if not client or client.name ~= 'ctxzip' then
    return
  end
  local value = args.data.params.value
  local request = M.request_progress
  if request and args.data.params.token == request.token then
    request.kind = value.kind
    request.message = value.message or request.message
    request.percentage = value.percentage or request.percentage
    if value.kind == 'end' then
      -- The answer (or the refusal, in this plugin's words) is announced by the request's own
      -- callback; the stage line only goes away.
      if M.config.progress then
        vim.api.nvim_echo({ { '' } }, false, {})
      end
      vim.cmd.redrawstatus({ bang = true, mods = { emsg_silent = true } })
      return
    end
  else
    M.progress_state = {
      kind = value.kind,
      title = value.title or (M.progress_state and M.progress_state.title),
      message = value.message,
      percentage = value.percentage,
    }
  end
  if M.config.progress then
    local msg = ('ctxzip: %s'):format(value.message or value.title or value.kind)
    if value.kind ~= 'end' and value.percentage then
      msg = ('%s (%d%%)'):format(msg, value.percentage)
    end
    vim.api.nvim_echo({ { msg } }, value.kind == 'end', {})
  end
  vim.cmd.redrawstatus({ bang = true, mods = { emsg_silent = true } })
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  if type(M.config.cmd) == 'string' then
    M.config.cmd = { M.config.cmd, 'lsp' }
  end
  local group = vim.api.nvim_create_augroup('ctxzip', { clear = true })
  vim.api.nvim_create_autocmd({ 'BufReadPost', 'BufNewFile' }, {
    group = group,
    callback = function(args)
      if is_file_buffer(args.buf) then
        M.start(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd('LspProgress', { group = group, callback = on_progress })

  vim.api.nvim_create_user_command('CtxZip', function(c)
    M.query(c.args, c.count > 0 and c.count or nil)
  end, { nargs = '+', count = 0, desc = 'ctxzip: context for a query, in a scratch buffer and a register' })
  vim.api.nvim_create_user_command('CtxZipFunction', function(c)
    local line1, line2
    if c.range == 2 then
      line1, line2 = c.line1, c.line2
    end
    M.function_context(c.args, nil, line1, line2)
  end, { nargs = '*', range = true, desc = 'ctxzip: context for the function under the cursor' })
  vim.api.nvim_create_user_command('CtxZipStatus', function()
    local client = M.client()
    if not client then
      return vim.notify('ctxzip: no server running', vim.log.levels.WARN)
    end
    client:request('ctxzip/status', nil, function(err, status)
      if err then
        return vim.notify('ctxzip: ' .. err.message, vim.log.levels.ERROR)
      end
      vim.notify(table.concat(M.status_lines(status), '\n'))
    end, 0)
  end, { desc = 'ctxzip: index and model state' })

  vim.keymap.set('n', '<Plug>(ctxzip-function)', '<Cmd>CtxZipFunction<CR>', { desc = 'ctxzip: context for this function' })
  vim.keymap.set('x', '<Plug>(ctxzip-function)', ':CtxZipFunction<CR>', { desc = 'ctxzip: context for the selection' })
  if M.config.function_key then
    vim.keymap.set({ 'n', 'x' }, M.config.function_key, '<Plug>(ctxzip-function)', { remap = true })
  end

  -- Start for the workspace now (the current buffer, or the working directory), and for
  -- files opened before setup ran.
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and is_file_buffer(bufnr) then
      M.start(bufnr)
    end
  end
  if not M.client() then
    M.start(0)
  end
end

return M
