-- User commands of dlm-lsp; the server itself starts after require('dlm_lsp').setup{}.
if vim.g.loaded_dlm_lsp then
  return
end
vim.g.loaded_dlm_lsp = true

vim.api.nvim_create_user_command('DlmInstantEdit', function(opts)
  local instruction = opts.args ~= '' and opts.args or nil
  require('dlm_lsp').instant_edit(opts.line1, opts.line2, instruction)
end, { range = true, nargs = '?', desc = 'dlm-lsp: regenerate the lines, optionally by instruction' })

vim.api.nvim_create_user_command('DlmFillHoles', function(opts)
  if opts.range > 0 then
    require('dlm_lsp').fill_holes(opts.line1, opts.line2)
  else
    require('dlm_lsp').fill_holes()
  end
end, { range = true, desc = 'dlm-lsp: fill ... / TODO / <HOLE> holes' })

vim.api.nvim_create_user_command('DlmStatus', function()
  require('dlm_lsp').status()
end, { desc = 'dlm-lsp: model state' })
