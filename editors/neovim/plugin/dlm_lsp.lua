-- dlm-lsp's user commands, also created by require('dlm_lsp').setup{} (a plugin manager
-- that adds editors/neovim to 'runtimepath' after startup never sources this file).
if vim.g.loaded_dlm_lsp then
  return
end
vim.g.loaded_dlm_lsp = true
require('dlm_lsp').create_commands()
