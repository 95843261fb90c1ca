--- :checkhealth dlm_lsp: the server command and its version, and the model in use.
local M = {}

function M.check()
  local dlm = require('dlm_lsp')
  local cfg = dlm.config
  vim.health.start('dlm-lsp')
  if vim.fn.has('nvim-0.11') == 1 then
    vim.health.ok('Neovim ' .. tostring(vim.version()))
  else
    vim.health.error('Neovim 0.11+ is needed (vim.lsp.config)')
  end
  if vim.fn.has('nvim-0.12') == 0 then
    vim.health.warn('ghost text needs Neovim 0.12 (vim.lsp.inline_completion)')
  end
  local cmd = cfg.cmd
  if vim.fn.executable(cmd[1]) == 0 then
    vim.health.error(('server command `%s` not found'):format(cmd[1]),
      { 'pip install dlm-language-server', 'or set cmd in setup{} to its full path' })
  else
    local out = vim.system(vim.list_extend(vim.deepcopy(cmd), { '--version' }),
      { text = true }):wait(60000)
    if out.code == 0 then
      vim.health.ok(('server: %s (%s)'):format(vim.trim(out.stdout), table.concat(cmd, ' ')))
    else
      vim.health.error(('`%s --version` failed: %s'):format(table.concat(cmd, ' '),
        vim.trim(out.stderr or '')))
    end
  end
  local status = dlm.status_sync(0)
  if status then
    local report = status.state == 'ready' and vim.health.ok
      or status.state == 'error' and vim.health.error or vim.health.warn
    report(('model %s: %s%s'):format(status.model, status.state,
      status.error and vim.NIL ~= status.error and (' (' .. status.error .. ')') or ''))
  else
    vim.health.info(('model setting: %s (the server is not attached to this buffer)')
      :format(cfg.settings.model or 'embedded'))
  end
end

return M
